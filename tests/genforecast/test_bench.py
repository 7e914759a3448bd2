"""The benchmark runs end to end on CPU (tiny sizes) and reports both the baseline and the optimised step."""

from pathlib import Path

import pytest

from genforecast.bench.cli import main


def test_bench_fashion_reports_baseline_and_optimised(fashion_catalogue: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASHION_CATALOGUE", str(fashion_catalogue))
    assert main(["fashion", "--batch-size", "4", "--resolution", "32", "--base-channels", "8", "--steps", "2",
                 "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "eager fp32" in out and "bf16-mixed + channels_last" in out
    assert "img/s" in out


def test_bench_framegan_reports_steps_and_pipeline(ucf101_demo: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UCF101_ROOT", str(ucf101_demo))
    assert main(["framegan", "--batch-sizes", "2", "--width-multiplier", "0.0625", "--steps", "2", "--warmup", "1",
                 "--num-workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "eager fp32" in out and "clips/s from the cache" in out
