"""The study runner trains the classifier and the variants through the real CLI and writes the results table."""

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import CONFIGS

from genforecast import study
from genforecast.loggers import SuiteWandbLogger
from genforecast.studies import f2f as f2f_study
from genforecast.study import main, publish_results

TINY = ["--override=--data.init_args.batch_size=8", "--override=--trainer.max_steps=4",
        "--override=--trainer.max_epochs=1", "--override=--trainer.val_check_interval=2"]


def test_fashion_study_prints_results_table(fashion_catalogue: Path, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASHION_CATALOGUE", str(fashion_catalogue))
    monkeypatch.delenv("FASHION_CLASSIFIER", raising=False)
    assert main(["fashion", "--logger", "csv", "--configs", str(CONFIGS), *TINY,
                 "--override=--data.init_args.resolution=32"]) == 0
    out = capsys.readouterr().out
    for variant in ("gan", "can", "canh"):
        assert f"| {variant} |" in out
    assert (tmp_path / "outputs" / "fashion" / "study" / "latest" / "results.md").is_file()
    assert (tmp_path / "outputs" / "fashion" / "classifier" / "latest" / "classifier.pt").is_file()


def test_publish_results_writes_prints_and_logs_each_table_to_wandb(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path, capsys):
    monkeypatch.chdir(tmp_path)
    logged = {}
    monkeypatch.setattr(SuiteWandbLogger, "log_table",
                        lambda self, key, columns, data: logged.update({key: (columns, data)}))
    rows = [{"row": "copy", "miou": 0.12345}, {"row": "model", "miou": 0.5}]
    columns = [("row", "method"), ("miou", "mIoU")]
    args = argparse.Namespace(logger="wandb")
    output = publish_results(args, "demo", "Demo study", {"short": (rows, columns), "mid": (rows[:1], columns)})
    assert output.parent.parent == Path("outputs") / "demo" / "study" and output.name == "results.md"
    text = output.read_text()
    assert text.startswith("short:\n| method | mIoU |") and "mid:\n" in text and "| copy | 0.123 |" in text
    assert "Demo study" in capsys.readouterr().out
    assert logged == {"results/short": (["method", "mIoU"], [["copy", 0.123], ["model", 0.5]]),
                      "results/mid": (["method", "mIoU"], [["copy", 0.123]])}


def test_publish_results_logs_nothing_with_the_csv_logger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(SuiteWandbLogger, "__init__", lambda *args, **kwargs: pytest.fail("W&B run started"))
    output = publish_results(argparse.Namespace(logger="csv"), "demo", "Demo study",
                             {"only": ([{"row": "copy"}], [("row", "method")])})
    assert output.read_text() == "| method |\n|---|\n| copy |\n"


def test_each_stage_ends_its_wandb_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Without it a study's second stage would log into the first stage's run (a new WandbLogger joins it)."""
    import wandb

    from genforecast import training_cli

    finished = []

    class FakeCLI:
        def __init__(self, subcommand, args):
            self.model = torch.nn.Linear(2, 1)
            self.datamodule = None
            self.run = SimpleNamespace(path=tmp_path)
            self.trainer = SimpleNamespace(validate=lambda *a, **k: [{"val/loss": 1.0}])

        def run_stage(self):
            return [{"val/loss": 2.0}]

    monkeypatch.setattr(training_cli, "SuiteCLI", FakeCLI)
    monkeypatch.setattr(wandb, "run", object())
    monkeypatch.setattr(wandb, "finish", lambda: finished.append(True))
    fitted = study.fit_and_validate(["a.yaml"])
    assert fitted.metrics["parameters"] == 3.0 and fitted.run_dir == tmp_path
    assert study.validate(["a.yaml"]).metrics == {"val/loss": 2.0}
    assert len(finished) == 2


def test_f2f_study_on_real_data_runs_the_paper_schedule_and_resumes_its_stages(
        cityscapes_demo: Path, detector_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CITYSCAPES_DATASET", str(cityscapes_demo))
    monkeypatch.setenv("F2F_DETECTOR", str(detector_weights))
    tiny = ["--data.init_args.resolution=[64, 128]", "--data.init_args.batch_size=2",
            "--data.init_args.val_batch_size=2", "--model.init_args.width_multiplier=0.03125",
            "--model.init_args.max_detections=5", "--trainer.max_epochs=1", "--trainer.max_steps=1"]
    command = ["f2f", "--logger", "csv", "--configs", str(CONFIGS), *(f"--override={arg}" for arg in tiny)]
    assert main(command) == 0
    for stage in f2f_study.SCHEDULE:
        assert (tmp_path / "outputs" / "f2f" / stage / "latest" / "checkpoints" / "last.ckpt").is_file()
    assert "| F2F (forecast features) |" in capsys.readouterr().out

    fitted = []
    monkeypatch.setattr(f2f_study, "fit_and_validate",
                        lambda configs, overrides: fitted.append((Path(configs[-1]).stem, overrides[-1]))
                        or study.StageRun({"train_seconds": 0.0, "parameters": 0.0}, tmp_path))
    monkeypatch.setattr(f2f_study, "validate", lambda configs, overrides: study.StageRun({}, tmp_path))
    assert main(command) == 0
    assert fitted == [(stage, "--ckpt_path=last") for stage in f2f_study.SCHEDULE]
