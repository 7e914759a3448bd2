"""``genforecast demo-data``: write the procedural demo datasets in the real datasets' on-disk layouts.

Each dataset is written into a temporary sibling folder and renamed into place when complete, so an
interrupted run never leaves a half-written dataset that a later run would take for a finished one. A stamp
beside it (``.<folder>.json``: the writer's parameters and :data:`DEMO_DATA_VERSION`) marks it finished; a
dataset whose stamp differs, written by another suite version, is rewritten rather than reused. A folder without
a stamp is used as it is, with a warning: it may be data someone put there, and nothing is deleted unasked.

Two scales go through the same writers with different parameters: ``demo`` (small sets that train on a CPU, under
``data/demo``) and ``paper`` (the papers' sizes, for benchmarks, under ``data/paper``): Cityscapes-format snippets of
30 frames at 1024x2048, UCF101-format videos at 320x240 and 25 fps with real lengths, fashion catalogues at 256 and
512 px.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from genforecast.demo_data.cityscapes import DEMO_SEQUENCES_PER_SPLIT, write_cityscapes_sequences
from genforecast.demo_data.fashion import write_fashion_catalogue
from genforecast.demo_data.ucf101 import write_ucf101

log = logging.getLogger(__name__)

DatasetWriter = Callable[..., object]

DEMO_DATA_VERSION = 2
"""Bumped whenever a writer's output changes without its parameters changing, so stale demo sets get rewritten."""

DATASETS: dict[str, tuple[str, DatasetWriter, dict[str, Any]]] = {
    "fashion": ("fashion_catalogue", write_fashion_catalogue, {"images_per_combination": 20}),
    "cityscapes": ("cityscapes", write_cityscapes_sequences, {"sequences_per_split": DEMO_SEQUENCES_PER_SPLIT}),
    "ucf101": ("UCF101", write_ucf101, {}),
}
"""Demo dataset name -> (folder under the demo root, writer, the writer's keyword arguments)."""

PAPER_SEQUENCES_PER_SPLIT = {"train": 4, "val": 1}
"""Enough training snippets for one batch of the F2F configs (4 sequences at 1024x2048)."""
PAPER_UCF101_FRAMES = 200
"""UCF101 clips last 7 s on average (about 180 frames at 25 fps); the paper-scale videos have 200 frames."""

PAPER_DATASETS: dict[str, tuple[str, DatasetWriter, dict[str, Any]]] = {
    "cityscapes": ("cityscapes", write_cityscapes_sequences,
                   {"sequences_per_split": PAPER_SEQUENCES_PER_SPLIT, "size": (1024, 2048)}),
    "ucf101": ("UCF101", write_ucf101, {"frames": PAPER_UCF101_FRAMES, "size": (240, 320)}),
    "fashion_256": ("fashion_catalogue_256", write_fashion_catalogue, {"images_per_combination": 4, "size": 256}),
    "fashion_512": ("fashion_catalogue_512", write_fashion_catalogue, {"images_per_combination": 4, "size": 512}),
}
"""Paper-scale dataset name -> (folder under the paper root, writer, the writer's keyword arguments)."""

SCALES: dict[str, dict[str, tuple[str, DatasetWriter, dict[str, Any]]]] = {"demo": DATASETS, "paper": PAPER_DATASETS}
DEFAULT_ROOTS = {"demo": "data/demo", "paper": "data/paper"}


def demo_stamp_path(name: str, demo_root: str | Path, scale: str = "demo") -> Path:
    """The stamp that marks dataset ``name`` of ``scale`` as completely written by this suite version."""
    return Path(demo_root) / f".{SCALES[scale][name][0]}.json"


def _stamp(name: str, scale: str) -> dict[str, Any]:
    return {"dataset": name, "version": DEMO_DATA_VERSION, "parameters": SCALES[scale][name][2]}


def ensure_demo_dataset(name: str, demo_root: str | Path, force: bool = False, scale: str = "demo") -> Path:
    """Path of dataset ``name`` of ``scale`` (:data:`SCALES`) under ``demo_root``, writing it first if it is missing,
    stale (stamped with other parameters or by another suite version) or ``force``."""
    folder, writer, parameters = SCALES[scale][name]
    target = Path(demo_root) / folder
    stamp_path = demo_stamp_path(name, demo_root, scale)
    if target.exists() and not force:
        if not stamp_path.is_file():
            log.warning("%s has no demo stamp (%s): it is used as it is, since it may not be generated data; "
                        "`genforecast demo-data --only %s --force` rewrites it", target, stamp_path, name)
            return target
        try:
            if json.loads(stamp_path.read_text()) == json.loads(json.dumps(_stamp(name, scale))):
                return target
        except ValueError:
            pass
        log.warning("demo dataset %s was written with other parameters or by another suite version (stamp %s); "
                    "rewriting it", target, stamp_path)
    staging = target.with_name(f".{folder}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    writer(staging, **parameters)
    stamp_path.unlink(missing_ok=True)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    partial_stamp = stamp_path.with_name(stamp_path.name + ".partial")
    partial_stamp.write_text(json.dumps(_stamp(name, scale), indent=1))
    partial_stamp.replace(stamp_path)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genforecast demo-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="demo",
                        help="demo: small sets that train on a CPU; paper: the papers' sizes, for benchmarks")
    parser.add_argument("--root", default=None, help="folder that receives one sub-folder per dataset "
                        f"(default: {', '.join(f'{root} for {scale}' for scale, root in DEFAULT_ROOTS.items())})")
    parser.add_argument("--only", choices=sorted(set().union(*SCALES.values())), action="append",
                        help="write only this dataset of the scale (repeatable); default: all")
    parser.add_argument("--force", action="store_true", help="rewrite datasets that already exist")
    args = parser.parse_args(argv)
    datasets = SCALES[args.scale]
    unknown = sorted(set(args.only or ()) - set(datasets))
    if unknown:
        parser.error(f"{', '.join(unknown)} not in the {args.scale} scale (choose from {', '.join(sorted(datasets))})")
    for name in args.only or sorted(datasets):
        path = ensure_demo_dataset(name, args.root or DEFAULT_ROOTS[args.scale], force=args.force, scale=args.scale)
        print(f"{name}: {path}")
    return 0
