"""The demo study of ``make human-study``: checkpoint lookup in both run-folder layouts, check, create, reuse."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from human_study_helpers import tiny_checkpoints

from genforecast.human_study.cli import main
from genforecast.human_study.demo import DEMO_VARIANTS, classifier_path, missing_inputs, run_file


def test_run_files_are_found_through_latest_first_then_in_the_old_layout(tmp_path: Path) -> None:
    variant = tmp_path / "fashion" / "gan"
    assert run_file(tmp_path, "fashion", "gan", "checkpoints/last.ckpt") is None
    (variant / "checkpoints").mkdir(parents=True)
    (variant / "checkpoints" / "last.ckpt").write_text("old layout")
    assert run_file(tmp_path, "fashion", "gan", "checkpoints/last.ckpt") == variant / "checkpoints" / "last.ckpt"
    (variant / "20260101-120000" / "checkpoints").mkdir(parents=True)
    (variant / "20260101-120000" / "checkpoints" / "last.ckpt").write_text("run folder")
    os.symlink("20260101-120000", variant / "latest")
    found = run_file(tmp_path, "fashion", "gan", "checkpoints/last.ckpt")
    assert found == variant / "latest" / "checkpoints" / "last.ckpt" and found.read_text() == "run folder"


def fake_outputs(root: Path, checkpoints: dict[str, Path], classifier: Path) -> Path:
    """An outputs tree in the run-folder layout holding the tiny checkpoints as the demo variants'."""
    for variant in DEMO_VARIANTS:
        run = root / "fashion" / variant / "20260101-000000"
        (run / "checkpoints").mkdir(parents=True)
        shutil.copyfile(checkpoints["canh" if variant == "canh" else "gan"], run / "checkpoints" / "last.ckpt")
        os.symlink(run.name, run.parent / "latest")
    run = root / "fashion" / "classifier" / "20260101-000000"
    run.mkdir(parents=True)
    shutil.copyfile(classifier, run / "classifier.pt")
    os.symlink(run.name, run.parent / "latest")
    return root


def test_demo_checks_creates_once_and_reuses(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                             fashion_catalogue: Path, classifier_weights: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("FASHION_CLASSIFIER", raising=False)
    monkeypatch.setenv("FASHION_CATALOGUE", str(fashion_catalogue))
    outputs = tmp_path / "outputs"
    assert main(["demo", "--check", "--outputs", str(outputs)]) == 1
    assert "missing gan checkpoint, can checkpoint, canh checkpoint, classifier" in capsys.readouterr().out
    assert main(["demo", "--outputs", str(outputs), "--out", str(tmp_path / "demo")]) == 2  # one-line error
    assert "genforecast study fashion" in capsys.readouterr().err

    checkpoints = tiny_checkpoints(tmp_path_factory.getbasetemp() / "human_study_shared" / "ckpt")
    fake_outputs(outputs, checkpoints, classifier_weights)
    assert missing_inputs(outputs) == [] and classifier_path(outputs).name == "classifier.pt"
    assert main(["demo", "--check", "--outputs", str(outputs)]) == 0
    study = tmp_path / "demo"
    assert main(["demo", "--outputs", str(outputs), "--out", str(study)]) == 0
    study_file = Path(f"{study}.yaml").read_text()
    assert "latest" not in study_file and "20260101-000000" in study_file  # the run the link pointed at
    assert list(yaml.safe_load(study_file)["variants"]) == ["gan", "can", "canh"]  # the report's order
    assert len(list((study / "images").iterdir())) == 4 * 20
    assert main(["demo", "--outputs", str(outputs), "--out", str(study)]) == 0
    assert "reusing the demo study" in capsys.readouterr().out
