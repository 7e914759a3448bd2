"""RunCheckpoint and ResumedOptimizerSettings: checkpoints that hold, and resumes that are exact."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules.fashion import FashionCatalogueDataModule
from genforecast.checkpointing import ResumedOptimizerSettings, RunCheckpoint, RunInterrupted
from lightning_modules.fashion_can import FashionCAN

BATCHES_PER_EPOCH = 19  # the tiny catalogue at batch 4; a GAN makes 2 optimiser steps (global steps) per batch


class SignalAtBatch(L.Callback):
    """Sends this process a signal in the middle of a step, as a cluster would at any time."""

    def __init__(self, batch: int, signum: int = signal.SIGTERM) -> None:
        self.batch, self.signum = batch, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.step_index == self.batch:
            os.kill(os.getpid(), self.signum)


def _fit(root: Path, folder: Path, max_steps: int, ckpt_path: str | None = None, callbacks=(), lr: float = 2e-4,
         **checkpoint_args) -> tuple[FashionCAN, L.Trainer]:
    L.seed_everything(0)
    datamodule = FashionCatalogueDataModule(str(root), resolution=32, batch_size=4, val_fraction=0.2, seed=0)
    model = FashionCAN(resolution=32, base_channels=8, creativity="holistic", seed=0, lr=lr)
    checkpoint = RunCheckpoint(dirpath=folder, save_last=True, save_top_k=0, **checkpoint_args)
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                        limit_val_batches=0, enable_model_summary=False, default_root_dir=folder,
                        callbacks=[checkpoint, ResumedOptimizerSettings(), *callbacks])
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model, trainer


def _assert_same_weights(first: torch.nn.Module, second: torch.nn.Module) -> None:
    expected = second.state_dict()
    differing = [name for name, tensor in first.state_dict().items() if not torch.equal(tensor, expected[name])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"


@pytest.fixture(scope="module")
def uninterrupted(fashion_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> FashionCAN:
    """60 global steps (30 batches: one epoch and 11 batches of the next) without a break."""
    return _fit(fashion_catalogue, tmp_path_factory.mktemp("uninterrupted"), max_steps=60)[0]


def test_last_checkpoint_is_the_end_of_the_fit_whatever_the_interval(fashion_catalogue: Path, tmp_path: Path):
    _, trainer = _fit(fashion_catalogue, tmp_path, max_steps=14, every_n_train_steps=4)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == trainer.global_step == 14


def test_extending_a_finished_run_continues_its_epoch_exactly(fashion_catalogue: Path, tmp_path: Path,
                                                              uninterrupted: FashionCAN):
    # 20 steps stop mid-epoch; 40 cross into the second epoch; 60 match the uninterrupted run
    _fit(fashion_catalogue, tmp_path, max_steps=20)
    _fit(fashion_catalogue, tmp_path, max_steps=40, ckpt_path=str(tmp_path / "last.ckpt"))
    extended, _ = _fit(fashion_catalogue, tmp_path, max_steps=60, ckpt_path=str(tmp_path / "last.ckpt"))
    assert extended.step_index == uninterrupted.step_index == 30
    _assert_same_weights(extended, uninterrupted)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_saves_at_a_step_boundary_and_the_resume_is_exact(fashion_catalogue: Path, tmp_path: Path,
                                                                 uninterrupted: FashionCAN, signum: int):
    with pytest.raises(RunInterrupted) as interrupted:
        _fit(fashion_catalogue, tmp_path, max_steps=60, callbacks=[SignalAtBatch(23, signum)])
    assert interrupted.value.exit_code == 128 + signum
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2 * 24  # the step the signal arrived in was finished, then saved
    assert signal.getsignal(signal.SIGTERM) is not None  # our handler is gone again
    resumed, _ = _fit(fashion_catalogue, tmp_path, max_steps=60, ckpt_path=str(tmp_path / "last.ckpt"))
    _assert_same_weights(resumed, uninterrupted)


def test_time_based_save_runs_without_validation(fashion_catalogue: Path, tmp_path: Path):
    class RecordLast(L.Callback):
        steps: list[int] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if (tmp_path / "last.ckpt").exists():
                self.steps.append(torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"])

    recorder = RecordLast()
    _fit(fashion_catalogue, tmp_path, max_steps=8, save_every_minutes=0.0, callbacks=[recorder])
    assert recorder.steps[:3] == [2, 4, 6]  # rewritten after every batch with a zero interval


def test_checkpoint_records_model_and_run(fashion_catalogue: Path, tmp_path: Path):
    L.seed_everything(0)
    datamodule = FashionCatalogueDataModule(str(fashion_catalogue), resolution=32, batch_size=4, seed=0)
    model = FashionCAN(resolution=32, base_channels=8)
    checkpoint = RunCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    checkpoint.provenance = {"family": "fashion", "variant": "canh", "run_id": "20260101-000000"}
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                        limit_val_batches=0, enable_model_summary=False, callbacks=[checkpoint])
    trainer.fit(model, datamodule=datamodule)
    record = torch.load(tmp_path / "last.ckpt", weights_only=True)["genforecast"]
    assert record == {"model": "lightning_modules.fashion_can.FashionCAN", "family": "fashion", "variant": "canh",
                      "run_id": "20260101-000000"}


def test_an_unlogged_monitored_metric_keeps_last_only(fashion_catalogue: Path, tmp_path: Path):
    L.seed_everything(0)
    datamodule = FashionCatalogueDataModule(str(fashion_catalogue), resolution=32, batch_size=4, seed=0)
    model = FashionCAN(resolution=32, base_channels=8, sample_grid_size=4)  # no classifier: no FID is logged
    checkpoint = RunCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=1, monitor="val/fid_classifier")
    trainer = L.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_progress_bar=False,
                        limit_val_batches=1, val_check_interval=1, enable_model_summary=False,
                        callbacks=[checkpoint], default_root_dir=tmp_path)
    with pytest.warns(UserWarning, match="val/fid_classifier.*is not logged by this model"):
        trainer.fit(model, datamodule=datamodule)
    assert sorted(path.name for path in tmp_path.glob("*.ckpt")) == ["last.ckpt"]


def test_a_learning_rate_given_when_resuming_wins_over_the_optimiser_state(fashion_catalogue: Path, tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture):
    _fit(fashion_catalogue, tmp_path, max_steps=4, lr=1e-3)
    with caplog.at_level("INFO"):
        _, trainer = _fit(fashion_catalogue, tmp_path, max_steps=8, ckpt_path=str(tmp_path / "last.ckpt"), lr=2e-4)
    assert [group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups] == [2e-4, 2e-4]
    assert "resuming with lr=0.0002" in caplog.text and "checkpoint's 0.001" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        _, trainer = _fit(fashion_catalogue, tmp_path, max_steps=12, ckpt_path=str(tmp_path / "last.ckpt"), lr=2e-4)
    assert "resuming with" not in caplog.text  # nothing changed: the optimiser state is restored as saved


def test_the_learning_rate_schedule_continues_from_the_new_base():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.04)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / 10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    saved = optimizer.state_dict()["param_groups"][0] | {}
    fresh = torch.optim.SGD([parameter], lr=0.02)
    fresh_scheduler = torch.optim.lr_scheduler.LambdaLR(fresh, lambda step: 1 - step / 10)
    configured = {key: value for key, value in fresh.param_groups[0].items() if key != "params"}
    fresh.load_state_dict(optimizer.state_dict())
    fresh_scheduler.load_state_dict(scheduler.state_dict())
    from genforecast.checkpointing import _apply_configured

    changes = _apply_configured(fresh.param_groups[0], configured, saved)
    assert changes == {"lr": (0.04, 0.02)}
    assert fresh.param_groups[0]["lr"] == pytest.approx(0.02 * 0.5)  # half way down the schedule, new base
    assert fresh.param_groups[0]["initial_lr"] == 0.02


def test_a_diverged_checkpoint_name_is_never_reused(tmp_path: Path):
    from lightning_modules.guard import _unused_path

    first = _unused_path(tmp_path, "diverged-step=5")
    first.write_bytes(b"first")
    second = _unused_path(tmp_path, "diverged-step=5")
    assert (first.name, second.name) == ("diverged-step=5.ckpt", "diverged-step=5-v2.ckpt")
