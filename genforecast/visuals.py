"""Pictures for the experiment logs: sample grids and strips, sent to whichever logger the run uses."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image


def image_grid(images: torch.Tensor, nrow: int = 8, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """A (3, H, W) float grid in [0, 1] of a batch of images given in ``value_range``."""
    low, high = value_range
    images = ((images.detach().float().cpu() - low) / (high - low)).clamp(0, 1)
    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


@rank_zero_only
def log_image(trainer: L.Trainer, key: str, grid: torch.Tensor, caption: str | None = None) -> Path | None:
    """Log a (3, H, W) image in [0, 1]: to W&B when it is the logger, and always as a PNG under the log dir.

    The PNG copy (``<log_dir>/images/<key>/step_<global_step>.png``) keeps the pictures next to the run's
    checkpoints and CSV metrics, so offline and CSV-logged runs have them too.
    """
    log_dir = Path(trainer.log_dir or trainer.default_root_dir)
    path = log_dir / "images" / key.replace("/", "_") / f"step_{trainer.global_step:08d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], caption=[caption] if caption else None,
                             step=trainer.global_step)
    return path
