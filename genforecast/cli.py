"""``genforecast``: the suite's one command line.

This module is the thin entry point: it imports nothing heavy, so ``genforecast --help`` and ``--version`` answer at
once, and each command imports what it needs. The training stages (``fit``, ``validate``, ``test``, ``predict``)
are LightningCLI runs (:mod:`genforecast.training_cli`); the other commands are listed in :data:`TOOLS`.

A mistake a user can fix (a missing data root, an untrained prerequisite, a damaged or foreign checkpoint, an
invalid setting) is printed as one line with the fix and exits with code 2; ``--debug`` shows the traceback.
Exit codes: 0 done, 2 user error, 3 training diverged (a checkpoint of the last good weights is saved),
128 + N stopped by signal N with a resumable checkpoint saved (143 for SIGTERM, 138 for SIGUSR1).
"""

from __future__ import annotations

import faulthandler
import importlib
import os
import sys
from collections.abc import Callable, Sequence

TOOLS: dict[str, tuple[str, str]] = {
    "demo-data": ("genforecast.demo_data.cli:main", "write the procedural demo datasets in the real on-disk layouts"),
    "study": ("genforecast.study:main", "train a paper's variants and baselines on a dataset and print the results table"),
    "bench": ("genforecast.bench.cli:main", "measure training throughput, peak memory and MFU against an eager fp32 baseline"),
    "human-study": ("genforecast.human_study.cli:main", "create, serve and report a human rating study of generated designs"),
}

HANG_TIMEOUT = "GENFORECAST_HANG_TIMEOUT"
"""Seconds after which every process of a command prints all its threads' stacks and exits (unset: never)."""

DEMO_ROOT = "data/demo"
"""Where the configs look for the demo datasets unless a data variable names real data."""

STAGES = {"fit": "train (and validate) a model", "validate": "one pass over the validation set",
          "test": "one pass over the test set", "predict": "write a model's outputs for a data split or folder"}

USAGE = ("usage: genforecast <command> [options]; genforecast <command> --help\n"
         "       genforecast --version; add --debug to any command to see tracebacks of user errors\n\ncommands:\n"
         + "\n".join(f"  {name:<12} {text}" for name, text in STAGES.items())
         + "\n" + "\n".join(f"  {name:<12} {text}" for name, (_, text) in TOOLS.items()))


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("genforecast")
    except PackageNotFoundError:
        return "unknown (not installed)"


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that report a user's mistake with a message that says what to do (no traceback needed)."""
    from datamodules.cache import CacheError
    from datamodules.video import CorruptVideoError
    from genforecast.runs import RunFolderError
    from lightning_modules.initial_weights import ForeignCheckpointError

    return (FileNotFoundError, NotADirectoryError, CacheError, CorruptVideoError, RunFolderError,
            ForeignCheckpointError, UserError)


class UserError(Exception):
    """A mistake in how a command was called; the message names the fix."""


def _load_tool(target: str) -> Callable[[Sequence[str]], int | None]:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def _run_stage(stage: str, args: Sequence[str]) -> int:
    from genforecast.training_cli import SuiteCLI

    SuiteCLI(stage, args).run_stage()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genforecast`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [arg for arg in args if arg != "--debug"]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] == "--version":
        print(f"genforecast {version()}")
        return 0
    command, rest = args[0], args[1:]
    if os.environ.get(HANG_TIMEOUT):
        # Every rank inherits the variable: a hung distributed run prints each rank's stacks, then ends.
        faulthandler.dump_traceback_later(float(os.environ[HANG_TIMEOUT]), exit=True)
    if command not in TOOLS and command not in STAGES:
        print(f"genforecast: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        if command in TOOLS:
            return _load_tool(TOOLS[command][0])(rest) or 0
        return _run_stage(command, rest)
    except Exception as error:  # noqa: BLE001 - classified below; anything unexpected is re-raised
        return _report(error, debug)


def _report(error: Exception, debug: bool) -> int:
    """The exit code for ``error`` after printing it in one line; re-raise what is not a known outcome."""
    from lightning_modules.guard import DivergenceError

    if isinstance(error, DivergenceError):
        print(f"genforecast: {error}", file=sys.stderr)
        return 3
    exit_code = getattr(error, "exit_code", None)
    if isinstance(exit_code, int) and type(error).__name__ == "RunInterrupted":
        print(f"genforecast: {error}", file=sys.stderr)
        return exit_code
    try:
        known = user_error_types()
    except Exception:  # noqa: BLE001 - the suite itself fails to import: the original error is what matters
        raise error from None
    cause = error
    while cause is not None and not isinstance(cause, known):  # jsonargparse wraps a model's error in its own
        cause = cause.__cause__
    if debug or cause is None:
        raise error
    error = cause
    message = str(error).strip() or type(error).__name__
    if isinstance(error, FileNotFoundError) and DEMO_ROOT in message:
        message += (f"\nThe procedural demo datasets are written by `genforecast demo-data --root {DEMO_ROOT}` (the "
                    "`make train-*` targets do it); point the configs at real data with the variables in the README.")
    print(f"genforecast: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
