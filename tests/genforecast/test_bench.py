"""The benchmark runs end to end on CPU (tiny sizes) and reports both the baseline and the optimised step, with
figures that are positive and consistent with each other."""

from pathlib import Path

import pytest

from genforecast.bench.cli import main
from genforecast.bench.f2f import Schedule


def result_tables(out: str) -> list[list[dict[str, str]]]:
    """Every results table printed by :func:`genforecast.bench.common.format_results`, as rows of cells by header."""
    tables, header = [], None
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells and cells[0] == "run":
            header = cells
            tables.append([])
        elif cells and header and not set(cells[0]) <= {"-"}:
            tables[-1].append(dict(zip(header, cells)))
        elif not cells:
            header = None
    return tables


def check_figures(out: str, tables: int) -> None:
    """``tables`` results tables, each with positive rates and memory, one FLOP count for its one step, the first row
    the baseline (1.00x) and every speed-up the ratio of the printed rates (up to their rounding)."""
    printed = result_tables(out)
    assert len(printed) == tables
    for rows in printed:
        rate_key = next(key for key in rows[0] if key.endswith("/s"))
        rates = [float(row[rate_key].replace(",", "")) for row in rows]
        rounding = max(0.5 * 10 ** -len(rows[0][rate_key].partition(".")[2]), 1e-12)
        assert rows[0]["run"] == "eager fp32" and rows[0]["speed-up"] == "1.00x"
        for row, rate in zip(rows, rates):
            assert rate > 0 and row["step GFLOP"] == rows[0]["step GFLOP"] and float(row["step GFLOP"]) >= 0
            assert float(row["peak memory"].split()[0]) > 0 and row["device"]
            speed_up = float(row["speed-up"].rstrip("x"))
            low, high = (rate - rounding) / (rates[0] + rounding), (rate + rounding) / (rates[0] - rounding)
            assert low - 0.005 <= speed_up <= high + 0.005, (row, rates[0])


def test_bench_fashion_reports_baseline_and_optimised(fashion_catalogue: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASHION_CATALOGUE", str(fashion_catalogue))
    assert main(["fashion", "--batch-size", "4", "--resolution", "32", "--base-channels", "8", "--steps", "2",
                 "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "eager fp32" in out and "bf16-mixed + channels_last" in out
    assert "img/s" in out
    check_figures(out, tables=1)


def test_bench_framegan_reports_steps_and_pipeline(ucf101_demo: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UCF101_ROOT", str(ucf101_demo))
    assert main(["framegan", "--batch-sizes", "2", "--width-multiplier", "0.0625", "--steps", "2", "--warmup", "1",
                 "--num-workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "eager fp32" in out and "clips/s from the cache" in out
    check_figures(out, tables=1)


def test_bench_segforecast_reports_both_modes_and_metric_time(cityscapes_demo: Path, segmenter_weights: Path,
                                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CITYSCAPES_DATASET", str(cityscapes_demo))
    monkeypatch.setenv("CITYSCAPES_SEGMENTER", str(segmenter_weights))
    assert main(["segforecast", "--resolution", "64", "128", "--crop-size", "32", "--batch-size", "2",
                 "--width-multiplier", "0.03125", "--steps", "2", "--warmup", "1", "--val-sequences", "8"]) == 0
    out = capsys.readouterr().out
    assert "S2S autoregressive step" in out and "S2S ar_finetune step" in out
    assert out.count("| eager fp32 |") == 2 and out.count("| bf16-mixed + channels_last |") == 2
    assert "8 val sequences: metrics in" in out
    check_figures(out, tables=2)


def test_bench_f2f_reports_bare_end_to_end_and_cached_steps(cityscapes_demo: Path, detector_weights: Path,
                                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CITYSCAPES_DATASET", str(cityscapes_demo))
    monkeypatch.setenv("F2F_DETECTOR", str(detector_weights))
    assert main(["f2f", "--levels", "p2", "--resolution", "64", "128", "--batch-size", "1",
                 "--width-multiplier", "0.03125", "--steps", "2", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "F2F P2 step (adam)" in out and "P2 features 256x16x32" in out
    assert out.count("| eager fp32 |") == 3 and out.count("| bf16-mixed + channels_last |") == 3
    assert "end to end / bare step" in out and "cached end to end / bare step" in out
    assert "needs all four levels" in out
    check_figures(out, tables=3)


def test_f2f_schedule_projection_follows_the_configs():
    schedule = Schedule.from_configs()
    assert schedule.epochs == {"p5": 80, "p4": 80, "p3": 80, "p2": 80, "ar_finetune": 80}
    assert (schedule.finetune_steps, schedule.level_frames, schedule.finetune_frames) == (3, 5, 7)
    one_second = dict.fromkeys(("p5", "p4", "p3", "p2"), 1.0)
    finetune = schedule.finetune_seconds(one_second, extraction_seconds=0.5)
    assert finetune == pytest.approx(3 * 4 + 0.5 * 7 / 5)
    assert schedule.projected_seconds(one_second, finetune) == pytest.approx(80 * 2975 * (4 + finetune) / (8 * 0.9))


def test_bench_joint_reports_both_modes_and_inference(cityscapes_demo: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    assert main(["joint", "--data-root", str(cityscapes_demo.parent), "--resolution", "64", "128", "--crop-size", "32",
                 "--batch-size", "2", "--width-multiplier", "0.125", "--steps", "2", "--warmup", "1",
                 "--inference-batches", "1"]) == 0
    out = capsys.readouterr().out
    assert "JointForecaster autoregressive step" in out and "JointForecaster ar_finetune step" in out
    assert out.count("| eager fp32 |") == 2 and out.count("| bf16-mixed + channels_last |") == 2
    assert "ms/sequence instance decoding" in out
    check_figures(out, tables=2)
