"""``genforecast bench <model>``: training throughput against the eager fp32 baseline of the same step."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

BENCHMARKS = {"fashion": "genforecast.bench.fashion", "framegan": "genforecast.bench.framegan",
              "segforecast": "genforecast.bench.segforecast", "f2f": "genforecast.bench.f2f",
              "joint": "genforecast.bench.joint", "eval": "genforecast.bench.eval",
              "data": "genforecast.bench.data", "memory": "genforecast.bench.memory",
              "overhead": "genforecast.bench.overhead"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genforecast bench", description=__doc__)
    models = parser.add_subparsers(dest="model", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(models.add_parser(name, help=module.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    importlib.import_module(BENCHMARKS[args.model]).run(args)
    return 0
