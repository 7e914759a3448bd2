"""Progress a person can follow, and third-party lines filtered by their exact text only."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest

from datamodules.fashion import FashionCatalogueDataModule
from genforecast.progress import LogLineProgress, _epoch_label, metrics_table
from genforecast.training_cli import QUIET_LOG_LINES, quiet_third_party_messages
from lightning_modules.fashion_can import FashionCAN


def test_plain_lines_carry_step_epoch_rate_eta_and_losses(fashion_catalogue: Path, tmp_path: Path, capsys):
    datamodule = FashionCatalogueDataModule(str(fashion_catalogue), resolution=32, batch_size=4, seed=0)
    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, limit_val_batches=0, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[LogLineProgress(every_seconds=0)],
                        default_root_dir=tmp_path, log_every_n_steps=1)
    trainer.fit(FashionCAN(resolution=32, base_channels=8), datamodule=datamodule)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[train]")]
    assert lines[0].startswith("[train] step 2/6 (33%)  epoch 0  ") and " samples/s  ETA 0:00:" in lines[0]
    assert "g_loss " in lines[-1] and lines[-1].startswith("[train] step 6/6 (100%)")


def test_an_epoch_limited_gan_counts_batches_not_its_two_optimizer_steps(fashion_catalogue: Path, tmp_path: Path,
                                                                         capsys):
    datamodule = FashionCatalogueDataModule(str(fashion_catalogue), resolution=32, batch_size=4, seed=0)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, limit_train_batches=3, logger=False, limit_val_batches=0,
                        enable_checkpointing=False, enable_model_summary=False,
                        callbacks=[LogLineProgress(every_seconds=0)], default_root_dir=tmp_path)
    trainer.fit(FashionCAN(resolution=32, base_channels=8), datamodule=datamodule)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[train]")]
    assert lines[0].startswith("[train] step 2  batch 1/6 (17%)  epoch 0  ")
    assert lines[-1].startswith("[train] step 12  batch 6/6 (100%)  epoch 1  ") and "ETA 0:00:00" in lines[-1]


def test_the_epoch_count_is_right_whether_epochs_or_steps_limit_the_run():
    assert _epoch_label(SimpleNamespace(current_epoch=3, max_epochs=80)) == "Epoch 3/79"
    assert _epoch_label(SimpleNamespace(current_epoch=3, max_epochs=-1)) == "Epoch 3"  # Lightning's bars print 3/-2


def test_final_metrics_table_lists_the_validation_scalars():
    table = metrics_table({"val/ap50": 0.5, "train/loss": 1.0, "val/miou": 0.25}).splitlines()
    assert table[2:] == ["val/ap50  0.5", "val/miou  0.25"]


def test_only_the_named_third_party_lines_are_dropped(caplog: pytest.LogCaptureFixture):
    quiet_third_party_messages()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info(QUIET_LOG_LINES[0] + ", try installing [litlogger](https://pypi.org/project/litlogger/) ...")
        logger.info("GPU available: False, used: False")
    assert [record.getMessage() for record in caplog.records] == ["GPU available: False, used: False"]
