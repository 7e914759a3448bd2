"""Progress a person can follow: a bar in a terminal, a plain line every N seconds in a log file.

In a terminal, :class:`TerminalProgressBar` is Lightning's tqdm bar with the epoch count fixed (``Epoch 3/79``, or
``Epoch 3`` when the run is limited by ``max_steps`` alone, where Lightning's bars print ``3/-2``) and the training
losses shown. When the output is not a terminal (a SLURM log, ``make ... > log``) a bar would write a carriage
return per update, so :class:`LogLineProgress` prints one line every ``every_seconds`` instead::

    [train] step 120/400 (30%)  epoch 3  45.2 samples/s  ETA 0:05:12  g_loss 0.694  d_loss 1.38

:func:`metrics_table` formats the final metrics of a fit for the terminal.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar


def _epoch_label(trainer: L.Trainer) -> str:
    limited_by_epochs = trainer.max_epochs is not None and trainer.max_epochs > 0
    return f"Epoch {trainer.current_epoch}" + (f"/{trainer.max_epochs - 1}" if limited_by_epochs else "")


def _training_losses(trainer: L.Trainer) -> dict[str, float]:
    """The latest ``train/*`` values, named without the prefix."""
    return {name.split("/", 1)[1]: float(value) for name, value in trainer.callback_metrics.items()
            if name.startswith("train/") and torch.as_tensor(value).numel() == 1}


class TerminalProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar with a correct epoch count and the training losses."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(_epoch_label(trainer))

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {**{name: f"{value:.3g}" for name, value in _training_losses(trainer).items()}, **metrics}


def _batch_size(batch: Any) -> int:
    """Samples in a batch: the leading size of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    return next((_batch_size(value) for value in values if isinstance(value, (torch.Tensor, dict, list, tuple))), 0)


class LogLineProgress(ProgressBar):
    """One plain line every ``every_seconds`` of training (see the module docstring), and one per validation."""

    def __init__(self, every_seconds: float = 30.0) -> None:
        super().__init__()
        self.every_seconds = every_seconds
        self._enabled = True
        self._start = self._last_line = 0.0
        self._samples = 0
        self._first_position = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last_line = time.monotonic()
        self._samples = 0
        self._first_position = _position(trainer)[0]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._samples += _batch_size(batch) * trainer.world_size
        if self._enabled and time.monotonic() - self._last_line >= self.every_seconds:
            self._print_line(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled:
            self._print_line(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled and not trainer.sanity_checking:
            print(f"[validate] step {trainer.global_step}  epoch {trainer.current_epoch}  "
                  f"{time.monotonic() - self._start:.0f} s", flush=True)

    def _print_line(self, trainer: L.Trainer) -> None:
        now = time.monotonic()
        elapsed = max(now - self._start, 1e-9)
        position, total, unit = _position(trainer)
        done = position - self._first_position
        parts = [f"[train] step {trainer.global_step}" if unit == "step" else
                 f"[train] step {trainer.global_step}  batch {position}"]
        if math.isfinite(total) and total > 0:
            parts[0] += f"/{int(total)} ({100 * position / total:.0f}%)"
            if done > 0:
                eta = (total - position) * elapsed / done
                parts.append(f"ETA {datetime.timedelta(seconds=round(eta))}")
        # After the last epoch Lightning's counter has moved on to one that never runs.
        epoch = min(trainer.current_epoch, trainer.max_epochs - 1) if trainer.max_epochs > 0 else trainer.current_epoch
        parts.insert(1, f"epoch {epoch}")
        parts.insert(2, f"{self._samples / elapsed:.1f} samples/s")
        parts += [f"{name} {value:.4g}" for name, value in _training_losses(trainer).items()]
        print("  ".join(parts), flush=True)
        self._last_line = now


def _position(trainer: L.Trainer) -> tuple[int, float, str]:
    """How far training is, in the unit its length is counted in: optimizer steps (``global_step``) against
    ``max_steps`` when that ends the run, or against the planned optimizer steps; batches for a manually optimized
    module (the GANs) whose length is set in epochs, since it takes two optimizer steps per batch while Lightning
    plans one."""
    if trainer.max_steps and trainer.max_steps > 0:
        return trainer.global_step, trainer.max_steps, "step"
    if trainer.lightning_module.automatic_optimization:
        return trainer.global_step, trainer.estimated_stepping_batches, "step"
    return trainer.fit_loop.epoch_loop.batch_progress.total.processed, trainer.estimated_stepping_batches, "batch"


def progress_callback(every_seconds: float = 30.0) -> ProgressBar:
    """The progress display for this process's output: a bar in a terminal, plain lines otherwise."""
    return TerminalProgressBar() if sys.stdout.isatty() else LogLineProgress(every_seconds)


def metrics_table(metrics: dict[str, Any], prefix: str = "val/") -> str:
    """The scalar metrics starting with ``prefix`` as an aligned two-column table ('' when there are none)."""
    rows = [(name, float(value)) for name, value in sorted(metrics.items())
            if name.startswith(prefix) and torch.as_tensor(value).numel() == 1]
    if not rows:
        return ""
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 10}"]
                     + [f"{name:<{width}}  {value:.6g}" for name, value in rows])
