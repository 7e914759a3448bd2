"""The report recovers the known ordering of simulated raters, writes its files, and survives W&B failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from human_study_helpers import synthetic_study

from genforecast.human_study import report as report_module
from genforecast.human_study.config import CONTROL
from genforecast.human_study.report import build_report, write_report
from genforecast.human_study.simulate import default_preferences, simulate


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 simulated raters (20 ratings and 10 pairs each) who prefer canh over can over gan by construction."""
    study = synthetic_study(tmp_path_factory.mktemp("report") / "study", per_variant=20, controls=20,
                            ratings_per_rater=20, pairs_per_rater=10)
    assert simulate(study, raters=60, seed=0) == 60 * 30
    return study


def test_default_preferences_increase_in_study_order() -> None:
    preferences = default_preferences(["gan", "can", "canh"])
    for quantity in ("likability", "novelty", "human", "strength"):
        values = [getattr(preferences[variant], quantity) for variant in ("gan", "can", "canh")]
        assert values == sorted(values) and values[0] < values[-1]
    assert CONTROL in preferences


def test_report_recovers_the_known_ordering(simulated: Path) -> None:
    report = build_report(simulated, replicates=300, seed=0)
    groups = {row["group"]: row for row in report.groups}
    assert list(groups) == ["gan", "can", "canh", CONTROL]
    for quantity in ("likability", "novelty", "human", "human_and_original"):
        values = [groups[variant][quantity]["value"] for variant in ("gan", "can", "canh")]
        assert values == sorted(values), quantity
    # The extremes are told apart with confidence, not just in order.
    assert groups["canh"]["likability"]["low"] > groups["gan"]["likability"]["high"]
    assert groups["canh"]["novelty"]["low"] > groups["gan"]["novelty"]["high"]
    assert groups[CONTROL]["human"]["value"] > groups["canh"]["human"]["value"]  # the controls' ceiling
    ranking = [row["level"] for row in report.ranking]
    assert ranking == ["canh", "can", "gan"] and [row["rank"] for row in report.ranking] == [1, 2, 3]
    assert report.ranking[0]["strength"]["low"] > report.ranking[-1]["strength"]["high"]
    assert all(0 < alpha < 1 for alpha in report.agreement.values())
    # Simulated raters perceive the automatic novelty in part (by construction): a positive rank correlation.
    assert report.novelty_correlation["rho"] > 0.2 and report.novelty_correlation["images"] == 60
    assert sum(row["ratings"] for row in report.groups) == 60 * 20 and report.pair_votes == 60 * 10


def test_report_writes_markdown_json_and_pictures(simulated: Path, tmp_path: Path, capsys) -> None:
    report = write_report(simulated, tmp_path / "report", replicates=100, wandb_group="fashion")
    assert "logged to W&B (group fashion)" in capsys.readouterr().out  # WANDB_MODE=disabled: a no-op run
    text = (tmp_path / "report" / "report.md").read_text()
    for expected in ("| gan |", "| control |", "human-made and original", "Bradley-Terry", "Krippendorff",
                     "Spearman", "![wundt](wundt.png)"):
        assert expected in text
    for name in ("wundt.png", "novelty_vs_nn.png", "bradley_terry.png"):
        assert (tmp_path / "report" / name).read_bytes().startswith(b"\x89PNG")
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["ranking"][0]["level"] == "canh" and saved["ratings"] == report.ratings


def test_a_failing_wandb_never_fails_the_report(simulated: Path, tmp_path: Path, capsys,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import genforecast.loggers

    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no route to api.wandb.ai")

    monkeypatch.setattr(genforecast.loggers, "SuiteWandbLogger", broken)
    write_report(simulated, tmp_path / "report", replicates=20)
    assert "W&B logging failed, report written anyway: ConnectionError" in capsys.readouterr().out
    assert (tmp_path / "report" / "report.md").is_file()


def test_a_study_without_answers_reports_empty_rows(tmp_path: Path) -> None:
    study = synthetic_study(tmp_path / "study", per_variant=2, controls=2)
    report = report_module.write_report(study, tmp_path / "report", replicates=10, wandb_group=None)
    assert report.ratings == 0 and all(row["ratings"] == 0 for row in report.groups)
    assert all(row["rank"] is None for row in report.ranking)
    assert "| gan | 2 | 0 | 0 | - | - | - | - |" in (tmp_path / "report" / "report.md").read_text()
