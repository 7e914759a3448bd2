"""W&B as a user gets it (offline, no credentials): what a run sends, through a real offline wandb run."""

from __future__ import annotations

from pathlib import Path

import pytest
import wandb
from conftest import CONFIGS
from wandb.sdk.wandb_run import Run

from genforecast.cli import main
from genforecast.loggers import metric_goal


@pytest.fixture
def wandb_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, list]:
    """W&B offline into ``tmp_path``; records what runs log, define, configure and attach (calls go through)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home"))
    sent: dict[str, list] = {"log": [], "define_metric": [], "log_artifact": [], "config": []}
    for method in ("log", "define_metric", "log_artifact"):
        original = getattr(Run, method)

        def spy(self, *args, _original=original, _method=method, **kwargs):
            sent[_method].append((args, kwargs))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Run, method, spy)
    original_init = wandb.init

    def init(*args, **kwargs):
        run = original_init(*args, **kwargs)
        sent["config"].append(run.config)
        return run

    monkeypatch.setattr(wandb, "init", init)
    return sent


def test_a_fit_logs_nested_config_aligned_pictures_best_summaries_rates_and_weights(
        wandb_offline: dict[str, list], fashion_catalogue: Path, classifier_weights: Path,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("FASHION_CATALOGUE", str(fashion_catalogue))
    monkeypatch.setenv("FASHION_CLASSIFIER", str(classifier_weights))
    assert main(["fit", f"--config={CONFIGS / 'trainer' / 'cpu.yaml'}", f"--config={CONFIGS / 'logger' / 'wandb.yaml'}",
                 f"--config={CONFIGS / 'fashion' / 'canh.yaml'}", "--data.init_args.resolution=32",
                 "--data.init_args.batch_size=4", "--model.init_args.base_channels=8",
                 "--model.init_args.sample_grid_size=4", "--trainer.max_epochs=-1", "--trainer.max_steps=8",
                 "--trainer.val_check_interval=2", "--trainer.check_val_every_n_epoch=null",
                 "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1",
                 "--experiment.log_artifacts=true"]) == 0
    (config,) = wandb_offline["config"]
    assert config["model"]["init_args"]["lambda_g_creativity"] == 1.0  # nested: filterable as model.init_args.*

    logged = [args[0] for args, _ in wandb_offline["log"]]
    grids = [entry["trainer/global_step"] for entry in logged if "samples/holistic" in entry]
    validations = [entry["trainer/global_step"] for entry in logged if "val/fid_classifier" in entry]
    assert len(grids) == 2 and grids == validations  # one axis for pictures and metrics
    assert grids[-1] < 4  # it counts batches (4 in all), not the GAN's 8 optimiser steps
    assert any(key.startswith("lr-Adam") for entry in logged for key in entry)

    summaries = {args[0]: kwargs.get("summary") for args, kwargs in wandb_offline["define_metric"] if args}
    assert summaries["val/fid_classifier"] == "min" and summaries["train/g_loss"] == "min"

    attached = {(args[0].name, tuple(kwargs["aliases"])) for args, kwargs in wandb_offline["log_artifact"]}
    assert ("fashion-canh", ("latest",)) in attached and ("fashion-canh", ("best",)) in attached


def test_metric_goals_follow_the_metric_names():
    assert [metric_goal(name) for name in ("val/model/ap50", "val/copy_last/mo_miou", "val/fid_classifier",
                                           "val/model/psnr_moving_1", "val/shape_entropy")] == [
        "max", "max", "min", "max", None]


def test_a_study_table_is_logged_through_a_real_offline_run(wandb_offline: dict[str, list], capsys):
    import argparse

    from genforecast.study import FORECAST_COLUMNS, publish_results

    rows = [{"row": "F2F", "short/ap50": 60.3, "train_minutes": 5.5, "parameters_m": 3.5},
            {"row": "copy last", "short/ap50": 54.6}]  # baselines have no training time: empty numeric cells
    output = publish_results(argparse.Namespace(logger="wandb"), "f2f", "F2F study",
                             {"forecasting": (rows, FORECAST_COLUMNS)}, rows=rows)
    assert "could not be logged" not in capsys.readouterr().out
    tables = [args[0]["results/forecasting"] for args, _ in wandb_offline["log"] if "results/forecasting" in args[0]]
    assert len(tables) == 1 and tables[0].data[1][FORECAST_COLUMNS.index(("train_minutes", "training (min)"))] is None
    assert output.read_text().count("| copy last |") == 1


def test_a_study_whose_report_cannot_be_logged_keeps_going(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys):
    import argparse

    from genforecast import study

    monkeypatch.chdir(tmp_path)

    def broken(*args, **kwargs):
        raise TypeError("Data row contained incompatible types")

    monkeypatch.setattr(study, "log_tables_to_wandb", broken)
    output = study.publish_results(argparse.Namespace(logger="wandb"), "demo", "Demo",
                                   {"only": ([{"row": "copy"}], [("row", "method")])})
    assert output.is_file()
    assert "could not be logged to W&B (TypeError: Data row contained incompatible types)" in capsys.readouterr().out
