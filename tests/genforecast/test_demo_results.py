"""The demo claims of the README, measured end to end on the procedural data (slow: `make test-slow`)."""

import json
from pathlib import Path

import pytest
from conftest import CONFIGS

from genforecast.study import main


def _table(path: Path) -> dict[str, dict[str, float]]:
    lines = [line.strip("|").split("|") for line in path.read_text().splitlines()]
    header = [cell.strip() for cell in lines[0]]
    return {row[0].strip(): {name: float(cell) for name, cell in zip(header[1:], row[1:])} for row in lines[2:]}


@pytest.mark.slow
def test_fashion_canh_raises_classifier_entropy_over_gan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASHION_CATALOGUE", raising=False)
    monkeypatch.delenv("FASHION_CLASSIFIER", raising=False)
    assert main(["fashion", "--logger", "csv", "--configs", str(CONFIGS), "--demo-root", str(tmp_path / "demo")]) == 0
    results = _table(tmp_path / "outputs" / "fashion" / "results.md")
    assert results["canh"]["shape entropy"] > results["gan"]["shape entropy"]
    assert results["canh"]["texture entropy"] > results["gan"]["texture entropy"]


@pytest.mark.slow
def test_joint_forecaster_beats_copy_last_on_mid_term_moving_objects(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    assert main(["joint", "--logger", "csv", "--configs", str(CONFIGS), "--demo-root", str(tmp_path / "demo")]) == 0
    rows = {row["row"]: row for row in json.loads((tmp_path / "outputs" / "joint" / "results.json").read_text())}
    model, copy = rows["distance maps (JointForecaster)"], rows["copy last frame (its objects)"]
    assert model["mid/mo_miou"] > copy["mid/mo_miou"]
    assert model["parameters_m"] < 1.0


@pytest.mark.slow
def test_s2s_ar_finetuned_beats_copy_last_on_mid_term_moving_objects(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    monkeypatch.delenv("CITYSCAPES_SEGMENTER", raising=False)
    assert main(["segforecast", "--logger", "csv", "--configs", str(CONFIGS),
                 "--demo-root", str(tmp_path / "demo")]) == 0
    results = _table(tmp_path / "outputs" / "segforecast" / "results.md")
    assert results["S2S AR fine-tuned"]["MO-mIoU (GT)"] > results["copy last segmentation"]["MO-mIoU (GT)"]


@pytest.mark.slow
def test_f2f_beats_copy_last_on_short_and_mid_term_ap50(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    monkeypatch.delenv("F2F_DETECTOR", raising=False)
    assert main(["f2f", "--logger", "csv", "--configs", str(CONFIGS), "--demo-root", str(tmp_path / "demo")]) == 0
    rows = {row["row"]: row for row in json.loads((tmp_path / "outputs" / "f2f" / "results.json").read_text())}
    model, copy = rows["F2F (forecast features)"], rows["copy last frame (detector)"]
    assert model["short/ap50"] > copy["short/ap50"]
    assert model["mid/ap50"] > copy["mid/ap50"]
