"""What the modules that train a network for a later stage share (the semantic segmenter, the Mask R-CNN detector,
the shape/texture classifier): the length a learning-rate schedule is planned over, the poly decay, and the export of
the trained network that the next stage loads by path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L

POLY_POWER = 0.9
"""Exponent of the poly learning-rate decay of segmentation and detection training (DeepLab, Detectron)."""


def planned_steps(trainer: L.Trainer) -> int:
    """Optimiser steps of this fit, at least 1: ``max_steps`` when set, else epochs times batches per epoch."""
    if trainer.max_steps and trainer.max_steps > 0:
        return trainer.max_steps
    return max(1, int(trainer.estimated_stepping_batches))


def poly_decay(step: int, total: int) -> float:
    """The learning-rate factor ``(1 - step / total) ** 0.9`` (:data:`POLY_POWER`), 0 from ``total`` steps on."""
    return (1 - min(step, total) / total) ** POLY_POWER


def export_for_next_stage(module: L.LightningModule, export: Callable[[str], Any], file_name: str) -> None:
    """At the end of a fit: ``export(path)`` on rank zero, to the module's ``export_path`` hyperparameter or else
    ``<run folder>/<file_name>``, then wait on every rank, since under DDP the next stage may start on another rank as
    soon as this fit returns."""
    if module.trainer.is_global_zero:
        export(module.hparams.export_path or str(Path(module.trainer.default_root_dir) / file_name))
    module.trainer.strategy.barrier("export")
