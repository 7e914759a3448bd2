"""``genforecast human-study``: registered in the suite's command line; create, status, export, simulate, report;
user errors as one line with exit code 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from human_study_helpers import synthetic_study, tiny_checkpoints

from genforecast.cli import TOOLS
from genforecast.cli import main as genforecast_main
from genforecast.human_study.cli import main


def test_registered_as_a_genforecast_tool(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert TOOLS["human-study"][0] == "genforecast.human_study.cli:main"
    study = synthetic_study(tmp_path / "study", per_variant=2, controls=2)
    assert genforecast_main(["human-study", "status", str(study)]) == 0
    assert "0 raters, 0 tasks handed out, 0 answers" in capsys.readouterr().out


def test_create_from_a_study_file(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                  fashion_catalogue: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoints = tiny_checkpoints(tmp_path_factory.getbasetemp() / "human_study_shared" / "ckpt")
    study_file = tmp_path / "mine.yaml"
    study_file.write_text(yaml.safe_dump({
        "catalogue": str(fashion_catalogue), "variants": {"gan": str(checkpoints["gan"])},
        "images_per_variant": 3, "controls": 2, "questions": {"pair_prompt": "Which one would you wear?"}}))
    assert main(["create", str(study_file), "--out", str(tmp_path / "study")]) == 0
    assert "serve it with: genforecast human-study serve" in capsys.readouterr().out
    saved = json.loads((tmp_path / "study" / "study.json").read_text())
    assert saved["questions"]["pair_prompt"] == "Which one would you wear?" and saved["classifier"] is None
    assert main(["create", str(study_file), "--out", str(tmp_path / "study")]) == 2
    assert "not empty; pass --force" in capsys.readouterr().err


def test_simulate_status_export_and_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    study = synthetic_study(tmp_path / "study", per_variant=4, controls=4, ratings_per_rater=4, pairs_per_rater=2)
    assert main(["simulate", str(study), "--raters", "5"]) == 0
    assert "5 simulated raters wrote 30 answers" in capsys.readouterr().out
    assert main(["status", str(study)]) == 0
    status = capsys.readouterr().out
    assert "5 raters, 30 tasks handed out, 30 answers" in status and "control" in status
    assert main(["export", str(study), "--out", str(tmp_path / "answers.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "answers.csv").open()))
    assert len(rows) == 30 and {row["task"] for row in rows} == {"rate", "pair"}
    assert main(["export", str(study), "--format", "json"]) == 0
    assert len(json.loads((study / "answers.json").read_text())) == 30
    capsys.readouterr()
    assert main(["report", str(study), "--bootstrap", "20", "--min-votes", "1", "--no-wandb"]) == 0
    assert "# Human study report: synthetic" in capsys.readouterr().out
    assert (study / "report" / "report.md").is_file()


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "bad.yaml").write_text("catalogue: c\nvariants: {gan: a.ckpt}\ncolour: red\n")
    assert main(["create", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert "unknown study file keys ['colour']" in capsys.readouterr().err
