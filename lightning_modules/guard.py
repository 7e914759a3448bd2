"""Divergence guard: what a training step does when one of its losses is not finite."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import lightning as L
import torch

log = logging.getLogger(__name__)

NonFinitePolicy = Literal["stop", "skip"]


class DivergenceError(RuntimeError):
    """Raised when training diverges under the ``stop`` policy; the message names the step and checkpoints."""

    run_status = "diverged"


def _checkpoint_dir(trainer: L.Trainer) -> Path:
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"


def _unused_path(folder: Path, stem: str) -> Path:
    """``<folder>/<stem>.ckpt``, or ``<stem>-v<n>.ckpt`` when taken: a diverged checkpoint is never overwritten."""
    path, version = folder / f"{stem}.ckpt", 1
    while path.exists():
        version += 1
        path = folder / f"{stem}-v{version}.ckpt"
    return path


def losses_are_finite(module: L.LightningModule, losses: dict[str, torch.Tensor], phase: str,
                      policy: NonFinitePolicy) -> bool:
    """Return True when every loss is finite on every rank; otherwise stop or skip according to ``policy``.

    Called before the backward pass, so the weights are still the last good ones: under ``stop`` they are
    saved to ``diverged-step=N.ckpt`` next to the periodic checkpoints and :class:`DivergenceError` is raised;
    under ``skip`` the caller drops this optimiser step and the count is logged as ``train/skipped_steps``.
    The decision is reduced over ranks so that all of them take the same branch (one rank alone stopping
    would leave the others waiting in the next all-reduce). It costs one host sync per step.
    """
    values = torch.stack([value.detach().float().reshape(()) for value in losses.values()])
    finite = bool(torch.isfinite(values).all().item())
    trainer = module.trainer
    finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
    if finite:
        return True
    described = ", ".join(f"{name}={value.item():.4g}" for name, value in losses.items())
    where = f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx})"
    if policy == "skip":
        log.warning("non-finite %s loss at %s (%s): step skipped", phase, where, described)
        return False
    path = _unused_path(_checkpoint_dir(trainer), f"diverged-step={trainer.global_step}")
    path = trainer.strategy.broadcast(path)  # rank 0's choice: the ranks may see the folder at different times
    trainer.save_checkpoint(path)
    raise DivergenceError(
        f"training diverged: non-finite {phase} loss at {where} ({described}). The weights from before this step "
        f"are saved in {path}; resume with --ckpt_path {path} and a lower --model.init_args.lr (it replaces the "
        "checkpoint's), or set --model.init_args.nonfinite skip to drop such steps."
    )
