"""The run lifecycle through `genforecast`, as a user meets it: run folders, resuming, recovery hints, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, REPO_ROOT

from genforecast.cli import main
from lightning_modules.fashion_can import FashionCAN

PRESETS = [f"--config={CONFIGS / 'trainer' / 'cpu.yaml'}", f"--config={CONFIGS / 'logger' / 'csv.yaml'}"]
FASHION_TINY = ["--data.init_args.resolution=32", "--data.init_args.batch_size=4",
                "--model.init_args.base_channels=8", "--model.init_args.sample_grid_size=4",
                "--trainer.max_epochs=-1"]


def _gan(*extra: str, stage: str = "fit", classifier: bool = False) -> list[str]:
    """A tiny FashionCAN GAN command line; without ``classifier`` it monitors a metric it logs (darkness)."""
    monitor = [] if classifier else ["--model.init_args.classifier_weights=null", "--checkpoint.monitor=val/darkness"]
    return [stage, *PRESETS, f"--config={CONFIGS / 'fashion' / 'gan.yaml'}", *FASHION_TINY, *monitor, *extra]


@pytest.fixture
def workdir(fashion_catalogue: Path, classifier_weights: Path, monkeypatch: pytest.MonkeyPatch,
            tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASHION_CATALOGUE", str(fashion_catalogue))
    monkeypatch.setenv("FASHION_CLASSIFIER", str(classifier_weights))
    return tmp_path


def _latest(workdir: Path, family: str = "fashion", variant: str = "gan") -> Path:
    return (workdir / "outputs" / family / variant / "latest").resolve()


def test_output_dir_moves_everything_of_the_run(workdir: Path):
    target = workdir / "elsewhere"
    assert main(_gan("--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
                     "--trainer.check_val_every_n_epoch=null", f"--experiment.output_dir={target}")) == 0
    run = (target / "latest").resolve()
    assert {"checkpoints", "csv", "images", "config.yaml", "run.json"} <= {path.name for path in run.iterdir()}
    assert (run / "csv" / "metrics.csv").is_file() and list((run / "images").rglob("*.png"))
    assert not (workdir / "outputs").exists()


def test_validate_with_best_and_last(workdir: Path):
    assert main(_gan("--trainer.max_steps=4", "--trainer.val_check_interval=1", "--trainer.limit_val_batches=1",
                     "--trainer.check_val_every_n_epoch=null")) == 0
    manifest = (_latest(workdir) / "run.json").read_text()
    assert '"best_checkpoint"' in manifest and '"status": "finished"' in manifest
    for spec in ("best", "last"):
        assert main(_gan(f"--ckpt_path={spec}", "--trainer.limit_val_batches=1", stage="validate")) == 0
    evaluations = [path for path in (workdir / "outputs" / "fashion" / "gan").iterdir() if "-validate" in path.name]
    assert len(evaluations) == 2  # each evaluation is a run of its own; latest stays the fit
    assert all((path / "csv" / "metrics.csv").is_file() for path in evaluations)


def test_a_damaged_last_checkpoint_names_the_newest_loadable_one_and_that_works(workdir: Path, capsys):
    args = _gan("--trainer.limit_val_batches=0", "--checkpoint.monitor=null", "--checkpoint.save_top_k=-1",
                "--checkpoint.every_n_train_steps=2")
    assert main([*args, "--trainer.max_steps=6"]) == 0
    last = _latest(workdir) / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    capsys.readouterr()
    assert main([*args, "--trainer.max_steps=8", "--ckpt_path=last"]) == 2
    error = capsys.readouterr().err
    assert "is damaged" in error and "Traceback" not in error
    suggested = error.split("pass --ckpt_path ")[1].split()[0]
    assert torch.load(suggested, weights_only=True)["global_step"] == 6
    assert main([*args, "--trainer.max_steps=8", f"--ckpt_path={suggested}"]) == 0


def test_divergence_hint_leads_to_a_working_run_and_never_overwrites(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys):
    original = FashionCAN.generator_losses

    def nan_at_third_batch(self, batch, rng):
        terms = original(self, batch, rng)
        return terms | {"loss": terms["loss"] * float("nan")} if self.step_index == 2 else terms

    args = _gan("--trainer.limit_val_batches=0", "--trainer.max_steps=10", "--model.init_args.lr=1e-3")
    monkeypatch.setattr(FashionCAN, "generator_losses", nan_at_third_batch)
    assert main(args) == 3
    error = capsys.readouterr().err
    diverged = Path(error.split("resume with --ckpt_path ")[1].split()[0])
    first_bytes = diverged.read_bytes()
    assert main([*args, f"--ckpt_path={diverged}"]) == 3  # same rate from the same weights: diverges again
    assert diverged.read_bytes() == first_bytes
    assert len(list(diverged.parent.glob("diverged-*.ckpt"))) == 2
    monkeypatch.setattr(FashionCAN, "generator_losses", original)
    assert main([*args[:-1], "--model.init_args.lr=2e-4", f"--ckpt_path={diverged}"]) == 0  # the hint's advice
    final = torch.load(diverged.parent / "last.ckpt", weights_only=True)
    assert final["global_step"] >= 10  # the diverged checkpoint is mid-batch (after the D update): one more step
    assert [group["lr"] for state in final["optimizer_states"] for group in state["param_groups"]] == [2e-4, 2e-4]
    assert diverged.read_bytes() == first_bytes


def test_without_a_classifier_the_run_validates_and_keeps_last(workdir: Path):
    args = _gan("--model.init_args.classifier_weights=null", "--trainer.max_steps=4", "--trainer.val_check_interval=1",
                "--trainer.limit_val_batches=1", "--trainer.check_val_every_n_epoch=null", classifier=True)
    with pytest.warns(UserWarning, match="val/fid_classifier"):
        assert main(args) == 0
    assert (_latest(workdir) / "checkpoints" / "last.ckpt").is_file()


def test_a_model_seed_override_runs(workdir: Path):
    assert main(_gan("--model.init_args.seed=1", "--trainer.max_steps=2", "--trainer.limit_val_batches=0")) == 0


def test_abbreviated_options_are_errors(workdir: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(_gan("--trainer.max_step=5"))
    assert exit_info.value.code != 0
    assert "max_step" in capsys.readouterr().err


def test_a_checkpoint_of_another_model_is_one_line(workdir: Path, capsys):
    assert main(_gan("--trainer.max_steps=2", "--trainer.limit_val_batches=0")) == 0
    checkpoint = _latest(workdir) / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    code = main(["validate", *PRESETS, f"--config={CONFIGS / 'fashion' / 'classifier.yaml'}",
                 "--data.init_args.resolution=32", "--data.init_args.batch_size=4", f"--ckpt_path={checkpoint}"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1
    assert "written by FashionCAN (fashion/gan), not by ShapeTextureClassifier" in error


def test_a_missing_demo_root_says_how_to_write_it_and_that_works(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                   classifier_weights: Path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASHION_CATALOGUE", raising=False)
    monkeypatch.setenv("FASHION_CLASSIFIER", str(classifier_weights))
    args = _gan("--trainer.max_steps=2", "--trainer.limit_val_batches=0")
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "genforecast demo-data --root data/demo" in error and "Traceback" not in error
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))
    with pytest.raises(FileNotFoundError):
        main([*args, "--debug"])
    assert main(["demo-data", "--root", "data/demo", "--only", "fashion"]) == 0  # the hint, as printed
    assert main(args) == 0


def test_an_untrained_classifier_names_its_command_and_that_works(fashion_catalogue: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASHION_CATALOGUE", str(fashion_catalogue))
    monkeypatch.delenv("FASHION_CLASSIFIER", raising=False)
    args = _gan("--trainer.max_steps=2", "--trainer.limit_val_batches=0", classifier=True)
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "genforecast fit --config configs/fashion/classifier.yaml" in error and error.count("\n") == 1
    assert main(["fit", *PRESETS, f"--config={CONFIGS / 'fashion' / 'classifier.yaml'}",
                 "--data.init_args.resolution=32", "--data.init_args.batch_size=4", "--trainer.max_steps=2",
                 "--trainer.limit_val_batches=0"]) == 0
    assert main(args) == 0  # the GAN now finds outputs/fashion/classifier/latest/classifier.pt


def test_evaluating_before_training_says_to_train_and_that_works(workdir: Path, capsys):
    assert main(_gan("--ckpt_path=last", stage="validate")) == 2
    assert "train it first with `genforecast fit` and the same configs" in capsys.readouterr().err
    assert main(_gan("--trainer.max_steps=2", "--trainer.limit_val_batches=0")) == 0
    assert main(_gan("--ckpt_path=last", "--trainer.limit_val_batches=1", stage="validate")) == 0


def test_predict_writes_the_models_outputs_into_its_run(workdir: Path):
    assert main(_gan("--trainer.max_steps=2", "--trainer.limit_val_batches=0")) == 0
    assert main(_gan("--ckpt_path=last", "--data.init_args.num_samples=6", stage="predict")) == 0
    (run,) = (workdir / "outputs" / "fashion" / "gan").glob("*-predict")
    assert len(list((run / "predictions" / "samples" / "none").glob("*.png"))) >= 6


def test_version_and_help_answer_without_importing_torch():
    code = ("import sys; from genforecast.cli import main; main(['--version']); main(['--help']); "
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'heavy import'")
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("genforecast ") and "fit" in completed.stdout
