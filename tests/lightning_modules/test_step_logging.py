"""Which training steps log: the logger's steps, the last batch of each epoch and the last batch of the run."""

from __future__ import annotations

import lightning as L
import torch

from lightning_modules.step_logging import logs_this_step


class _Recorder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.logged_batches: list[tuple[int, int]] = []

    def training_step(self, batch, batch_idx):
        loss = (self.weight - batch[0]).pow(2).sum()
        if logs_this_step(self):
            self.logged_batches.append((self.current_epoch, batch_idx))
            self.log("train/loss", loss.detach())
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(5, 1), batch_size=1)


def test_logs_on_logger_steps_epoch_ends_and_the_last_step(tmp_path):
    module = _Recorder()
    trainer = L.Trainer(accelerator="cpu", max_steps=8, log_every_n_steps=3, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(module)
    # global steps 3 and 6 (batches 2 of epoch 0 and 0 of epoch 1) are the logger's; batch 4 ends epoch 0; with
    # max_steps=8 the last two batches (global steps 7 and 8) log so that callback_metrics holds the final loss
    assert module.logged_batches == [(0, 2), (0, 4), (1, 0), (1, 1), (1, 2)]
    assert "train/loss" in trainer.callback_metrics
    assert logs_this_step(_Recorder()) is False
