"""``genforecast bench gpu --dry-run``: every GPU figure's code runs at tiny shapes on the CPU, as the GPU machine has it
(without the packages it lacks), and writes both reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from genforecast.bench.gpu import GROUPS

REPO_ROOT = Path(__file__).resolve().parents[2]
ABSENT_ON_THE_GPU_MACHINE = ("wandb", "omegaconf", "jsonargparse", "pycocotools")
"""Not installed there (``../shared/reference/stack.md``); PyAV and cityscapesscripts come from ``make gpu-wheels``."""


def test_bench_gpu_dry_run_measures_every_group_without_the_absent_packages(
        fashion_catalogue: Path, ucf101_demo: Path, cityscapes_demo: Path, detector_weights: Path, tmp_path: Path):
    environment = os.environ | {"FASHION_CATALOGUE": str(fashion_catalogue), "UCF101_ROOT": str(ucf101_demo),
                                "CITYSCAPES_DATASET": str(cityscapes_demo), "F2F_DETECTOR": str(detector_weights),
                                "PYTHONPATH": str(REPO_ROOT)}
    # A module set to None in sys.modules cannot be imported: the run fails if the benchmark path needs one.
    program = (f"import sys; sys.modules.update(dict.fromkeys({ABSENT_ON_THE_GPU_MACHINE!r})); "
               "from genforecast.bench.cli import main; sys.exit(main(sys.argv[1:]))")
    completed = subprocess.run([sys.executable, "-c", program, "gpu", "--dry-run", "--out", str(tmp_path / "out"),
                                "--data-root", str(tmp_path / "demo")],
                               cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=1200)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_report.json").read_text())
    assert [group["name"] for group in report["groups"]] == [group.name for group in GROUPS]
    assert all(group["status"] == "measured" for group in report["groups"]), report["groups"]
    names = [name for group in GROUPS for name in group.figures]
    assert [figure["name"] for figure in report["figures"]] == names
    assert all(figure["met"] is None for figure in report["figures"])  # a dry run meets nothing
    markdown = (tmp_path / "out" / "gpu_report.md").read_text()
    assert "Dry run at tiny shapes" in markdown and all(f"| {name} |" in markdown for name in names)
