"""Pictures for the experiment logs: sample grids and strips, sent to whichever logger the run uses.

Two rules keep them safe and comparable. No collective is called here: these functions run on rank zero only
(``rank_zero_only``), so they write under ``trainer.default_root_dir`` (the run folder, the same on every rank)
and never ask ``trainer.log_dir``, which broadcasts and would leave the other ranks waiting. And each picture is
logged at :func:`log_step`, the step Lightning logs metrics at (batches, not optimiser steps: a GAN makes two
optimiser steps per batch), so pictures and metrics share one x axis on W&B.
"""

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


def log_step(trainer: L.Trainer) -> int:
    """The step the trainer's loggers record metrics at (Lightning's count of batches that stepped)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


@rank_zero_only
def log_image(trainer: L.Trainer, key: str, grid: torch.Tensor, caption: str | None = None) -> Path | None:
    """Log a (3, H, W) image in [0, 1]: to W&B when it is the logger, and always as a PNG under the log dir.

    The PNG copy (``<run folder>/images/<key>/step_<step>.png``) keeps the pictures next to the run's checkpoints
    and CSV metrics, so offline and CSV-logged runs have them too.
    """
    step = log_step(trainer)
    path = Path(trainer.default_root_dir) / "images" / key.replace("/", "_") / f"step_{step:08d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], caption=[caption] if caption else None, step=step)
    return path


def encode_video(frames: torch.Tensor, path: Path, fps: int = 4,
                 value_range: tuple[float, float] = (-1.0, 1.0)) -> Path:
    """Encode (T, 3, H, W) frames to an H.264 (or MPEG-4 if unavailable) file with PyAV."""
    import av

    low, high = value_range
    pixels = ((frames.detach().float().cpu() - low) / (high - low)).clamp(0, 1).mul(255).round().to(torch.uint8)
    pixels = pixels[..., : pixels.shape[-2] // 2 * 2, : pixels.shape[-1] // 2 * 2].permute(0, 2, 3, 1).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = pixels.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in pixels:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@rank_zero_only
def log_video(trainer: L.Trainer, key: str, frames: torch.Tensor, fps: int = 4) -> Path:
    """Log a (T, 3, H, W) clip in [-1, 1] as a video file: to W&B when it is the logger, always under the log dir.

    The clip is encoded here with PyAV (``wandb.Video`` from arrays would need moviepy).
    """
    step = log_step(trainer)
    path = encode_video(frames, Path(trainer.default_root_dir) / "videos" / key.replace("/", "_") / f"step_{step:08d}.mp4",
                        fps=fps)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log({key: wandb.Video(str(path), format="mp4"), "trainer/global_step": step})
    return path


@rank_zero_only
def log_segmentation_masks(trainer: L.Trainer, key: str, image: torch.Tensor, masks: dict[str, torch.Tensor],
                           class_names: dict[int, str], value_range: tuple[float, float] = (-1.0, 1.0)) -> None:
    """Log ``image`` (3, H, W) with class maps as W&B interactive mask overlays (a no-op for other loggers).

    ``masks`` maps a layer name ("forecast", "ground truth") to an (H, W) integer class map; ``class_names`` names
    its values, so the dashboard lets a user toggle each class and each layer. The PNG grids of
    :func:`log_image` stay the picture every logger gets; this adds the interactive view where W&B is used.
    """
    loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
    if not loggers:
        return
    import wandb

    low, high = value_range
    pixels = ((image.detach().float().cpu() - low) / (high - low)).clamp(0, 1).mul(255).round().to(torch.uint8)
    layers = {name: {"mask_data": mask.detach().cpu().numpy().astype("uint8"), "class_labels": class_names}
              for name, mask in masks.items()}
    picture = wandb.Image(pixels.permute(1, 2, 0).numpy(), masks=layers)
    for logger in loggers:
        logger.experiment.log({key: picture, "trainer/global_step": log_step(trainer)})


def instance_class_map(masks: torch.Tensor, label_ids: torch.Tensor, scores: torch.Tensor | None = None,
                       score_threshold: float = 0.5) -> torch.Tensor:
    """A (H, W) trainId map painted from Cityscapes instances (N, H, W) with label ids (N,), 255 elsewhere.

    Instances scoring below ``score_threshold`` are left out; higher scores are painted last, so they win overlaps.
    """
    from metrics.cityscapes_labels import IGNORE_TRAIN_ID, label_id_to_train_id_table

    keep = scores >= score_threshold if scores is not None else torch.ones(len(masks), dtype=torch.bool)
    order = scores[keep].argsort() if scores is not None else torch.arange(int(keep.sum()))
    table = torch.from_numpy(label_id_to_train_id_table()).to(masks.device)
    painted = torch.full(masks.shape[-2:], IGNORE_TRAIN_ID, dtype=torch.uint8, device=masks.device)
    for mask, label_id in zip(masks[keep][order], label_ids[keep][order]):
        painted[mask.bool()] = table[label_id.long()]
    return painted
