"""A run killed mid-epoch and resumed from its last checkpoint ends with the same weights as an uninterrupted run."""

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.fashion import FashionCatalogueDataModule
from lightning_modules.fashion_can import FashionCAN

BATCHES = 24  # the tiny catalogue has 19 training batches per epoch: the crash and the end fall in epoch 1


class Killed(Exception):
    pass


class KillAtBatch(L.Callback):
    def __init__(self, global_batch: int) -> None:
        self.global_batch = global_batch
        self.seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen += 1
        if pl_module.step_index == self.global_batch:
            raise Killed


def _train(root: Path, checkpoints: Path, ckpt_path: str | None = None, kill_at: int | None = None) -> FashionCAN:
    L.seed_everything(0)
    datamodule = FashionCatalogueDataModule(str(root), resolution=32, batch_size=4, val_fraction=0.2, seed=0)
    model = FashionCAN(resolution=32, base_channels=8, creativity="holistic", seed=0)
    callbacks = [ModelCheckpoint(dirpath=checkpoints, every_n_train_steps=2, save_last=True, save_top_k=0)]
    if kill_at is not None:
        callbacks.append(KillAtBatch(kill_at))
    trainer = L.Trainer(accelerator="cpu", max_steps=2 * BATCHES, logger=False, enable_progress_bar=False,
                        limit_val_batches=0, enable_model_summary=False, callbacks=callbacks,
                        default_root_dir=checkpoints.parent)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model


def test_killed_run_resumes_to_identical_weights(fashion_catalogue: Path, tmp_path: Path):
    reference = _train(fashion_catalogue, tmp_path / "uninterrupted")
    with pytest.raises(Killed):
        _train(fashion_catalogue, tmp_path / "killed", kill_at=22)
    resumed = _train(fashion_catalogue, tmp_path / "killed", ckpt_path="last")
    assert resumed.step_index == reference.step_index == BATCHES
    expected = reference.state_dict()
    for name, tensor in resumed.state_dict().items():
        assert torch.equal(tensor, expected[name]), f"{name} differs after resume"
