"""The demo claims of the docs (docs/<paper>.md), measured end to end on the procedural data (slow: `make test-slow`)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT


def _table(path: Path) -> dict[str, dict[str, float]]:
    lines = [line.strip("|").split("|") for line in path.read_text().splitlines()]
    header = [cell.strip() for cell in lines[0]]
    return {row[0].strip(): {name: float(cell) for name, cell in zip(header[1:], row[1:])} for row in lines[2:]}


def _run_demo_study(family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *real_data_variables: str) -> Path:
    """``make train-<family>`` as the README states it (default trainer and logger: W&B, offline without
    credentials) in a fresh folder with the Makefile and configs; return the study's newest results folder.

    The repository's virtual environment is used as it is (``-o`` keeps make from reinstalling it)."""
    for name in ("Makefile", "configs"):
        (shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy)(REPO_ROOT / name, tmp_path / name)
    venv = REPO_ROOT / ".venv"
    env = {name: value for name, value in os.environ.items() if not name.startswith("WANDB_")}
    for variable in real_data_variables:
        env.pop(variable, None)
    env |= {variable: str(tmp_path / "wandb-home") for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR",
                                                                     "WANDB_DATA_DIR")}
    completed = subprocess.run(["make", f"train-{family}", f"VENV={venv}", "-o", str(venv / ".installed-stamp")],
                               cwd=tmp_path, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "written to outputs/" in completed.stdout and "could not be logged" not in completed.stdout
    return tmp_path / "outputs" / family / "study" / "latest"


@pytest.mark.slow
def test_fashion_canh_raises_classifier_entropy_over_gan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    outputs = _run_demo_study("fashion", tmp_path, monkeypatch, "FASHION_CATALOGUE", "FASHION_CLASSIFIER")
    results = _table(outputs / "results.md")
    assert results["canh"]["shape entropy"] > results["gan"]["shape entropy"]
    assert results["canh"]["texture entropy"] > results["gan"]["texture entropy"]


@pytest.mark.slow
def test_joint_forecaster_beats_copy_last_on_mid_term_moving_objects(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    outputs = _run_demo_study("joint", tmp_path, monkeypatch, "CITYSCAPES_DATASET")
    rows = {row["row"]: row for row in json.loads((outputs / "results.json").read_text())}
    model, copy = rows["distance maps (JointForecaster)"], rows["copy last frame (its objects)"]
    assert model["mid/mo_miou"] > copy["mid/mo_miou"]
    assert model["parameters_m"] < 1.0


@pytest.mark.slow
def test_s2s_ar_finetuned_beats_copy_last_on_mid_term_moving_objects(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    outputs = _run_demo_study("segforecast", tmp_path, monkeypatch, "CITYSCAPES_DATASET", "CITYSCAPES_SEGMENTER")
    results = _table(outputs / "results.md")
    assert results["S2S AR fine-tuned"]["MO-mIoU (GT)"] > results["copy last segmentation"]["MO-mIoU (GT)"]


@pytest.mark.slow
def test_f2f_beats_copy_last_on_short_and_mid_term_ap50(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    outputs = _run_demo_study("f2f", tmp_path, monkeypatch, "CITYSCAPES_DATASET", "F2F_DETECTOR")
    rows = {row["row"]: row for row in json.loads((outputs / "results.json").read_text())}
    model, copy = rows["F2F (forecast features)"], rows["copy last frame (detector)"]
    assert model["short/ap50"] > copy["short/ap50"]
    assert model["mid/ap50"] > copy["mid/ap50"]
