"""``genforecast bench <model>``: training throughput against the eager fp32 baseline of the same step."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

BENCHMARKS = {"fashion": "genforecast.bench.fashion", "framegan": "genforecast.bench.framegan",
              "segforecast": "genforecast.bench.segforecast", "f2f": "genforecast.bench.f2f",
              "joint": "genforecast.bench.joint", "eval": "genforecast.bench.eval",
              "data": "genforecast.bench.data", "memory": "genforecast.bench.memory",
              "overhead": "genforecast.bench.overhead", "gpu": "genforecast.bench.gpu"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one benchmark. Only the named one is imported and given its arguments (``--help`` and unknown names list
    them all), so a benchmark runs where another's imports or settings would fail."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = [argv[0]] if argv and argv[0] in BENCHMARKS else list(BENCHMARKS)
    parser = argparse.ArgumentParser(prog="genforecast bench", description=__doc__)
    models = parser.add_subparsers(dest="model", required=True)
    for name in chosen:
        module = importlib.import_module(BENCHMARKS[name])
        module.add_arguments(models.add_parser(name, help=module.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    importlib.import_module(BENCHMARKS[args.model]).run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
