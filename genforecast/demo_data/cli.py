"""``genforecast demo-data``: write the procedural demo datasets in the real datasets' on-disk layouts.

Each dataset is written into a temporary sibling folder and renamed into place when complete, so an
interrupted run never leaves a half-written dataset that a later run would take for a finished one.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from genforecast.demo_data.cityscapes import write_cityscapes_sequences
from genforecast.demo_data.fashion import write_fashion_catalogue
from genforecast.demo_data.ucf101 import write_ucf101

DatasetWriter = Callable[[Path], object]

DATASETS: dict[str, tuple[str, DatasetWriter]] = {
    "fashion": ("fashion_catalogue", lambda root: write_fashion_catalogue(root, images_per_combination=20)),
    "cityscapes": ("cityscapes", lambda root: write_cityscapes_sequences(root)),
    "ucf101": ("UCF101", lambda root: write_ucf101(root)),
}


def ensure_demo_dataset(name: str, demo_root: str | Path, force: bool = False) -> Path:
    """Path of demo dataset ``name`` under ``demo_root``, writing it first if it is missing (or ``force``)."""
    folder, writer = DATASETS[name]
    target = Path(demo_root) / folder
    if target.exists() and not force:
        return target
    staging = target.with_name(f".{folder}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    writer(staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genforecast demo-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/demo", help="folder that receives one sub-folder per dataset")
    parser.add_argument("--only", choices=sorted(DATASETS), action="append",
                        help="write only this dataset (repeatable); default: all")
    parser.add_argument("--force", action="store_true", help="rewrite datasets that already exist")
    args = parser.parse_args(argv)
    for name in args.only or sorted(DATASETS):
        path = ensure_demo_dataset(name, args.root, force=args.force)
        print(f"{name}: {path}")
    return 0
