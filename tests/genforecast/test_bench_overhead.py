"""``genforecast bench overhead`` runs every model's suite step against its bare loop and says where the time goes."""

from pathlib import Path

import pytest

from genforecast.bench.cli import main


def test_bench_overhead_reports_every_model_and_the_breakdown(fashion_catalogue: Path, ucf101_demo: Path,
                                                              cityscapes_demo: Path, segmenter_weights: Path,
                                                              detector_weights: Path, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path, capsys):
    monkeypatch.chdir(tmp_path)
    for name, value in (("FASHION_CATALOGUE", fashion_catalogue), ("UCF101_ROOT", ucf101_demo),
                        ("CITYSCAPES_DATASET", cityscapes_demo), ("CITYSCAPES_SEGMENTER", segmenter_weights),
                        ("F2F_DETECTOR", detector_weights)):
        monkeypatch.setenv(name, str(value))
    assert main(["overhead", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--profile-steps", "2"]) == 0
    out = capsys.readouterr().out
    table = out.split("Host overhead per training step")[1].split("Where the suite step's time goes")[0]
    for model in ("FashionCAN", "FrameGAN Adv+GDL", "S2S (SegForecastAR)", "F2F forecaster", "Joint forecaster"):
        assert f"| {model} |" in table
    breakdown = out.split("Where the suite step's time goes")[1]
    for category in ("losses (forward)", "backward", "optimizer step", "suite: divergence guard",
                     "Lightning: logger connector", "Lightning: loop and hooks (the rest)"):
        assert f"| {category} |" in breakdown
