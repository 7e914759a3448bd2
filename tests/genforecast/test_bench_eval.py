"""``genforecast bench eval`` at tiny sizes: every evaluator row is printed with positive times, a speed-up that is the
ratio of the printed times, and agreement with its reference (no timing is asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from genforecast.bench.cli import main

REFERENCED = ("instance AP (CityscapesInstanceAP)", "semantic mIoU (SegmentationIoU)", "PSNR (FramePSNR)",
              "SSIM (FrameSSIM)")
TIMED_ALONE = ("sharpness difference", "moving-area mask (Farneback)")


def _table_rows(output: str) -> dict[str, list[str]]:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in output.splitlines()
            if line.startswith("| ") and not line.startswith("| evaluator")]
    return {row[0]: row[1:] for row in rows}


def test_bench_eval_prints_times_speed_ups_and_agreement(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "--images", "2", "--height", "48", "--width", "96", "--instances", "5", "--predictions", "8",
                 "--video-frames", "2", "--video-height", "24", "--video-width", "40", "--device", "cpu",
                 "--work-dir", str(tmp_path)]) == 0
    rows = _table_rows(capsys.readouterr().out)
    assert set(rows) == set(REFERENCED + TIMED_ALONE)
    for name in REFERENCED:
        items, suite, reference, speed_up, identical, device = rows[name]
        suite_seconds, reference_seconds = float(suite), float(reference)
        assert suite_seconds > 0 and reference_seconds > 0 and identical == "yes" and device == "cpu"
        assert items.split()[0] == ("2" if "Cityscapes" in name or "Segmentation" in name else "2")
        # 4 significant digits on each time and 1 decimal on the speed-up bound the rounding.
        ratio = reference_seconds / suite_seconds
        assert float(speed_up.rstrip("x")) == pytest.approx(ratio, rel=2e-3, abs=0.051)
    for name in TIMED_ALONE:
        assert float(rows[name][1]) > 0 and rows[name][2:5] == ["n/a", "n/a", "n/a"]
    assert (tmp_path / "instance" / "gtInstances.json").is_file() and (tmp_path / "pixel" / "results").is_dir()
