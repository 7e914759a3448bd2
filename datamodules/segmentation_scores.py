"""Cached segmenter scores of the Cityscapes snippet frames: the inputs and targets of the S2S forecasters.

The S2S models of Luc et al. (2017) read the pre-softmax class scores of a frozen segmenter for past frames and
predict those of future frames. :class:`SegmentationScoreDataModule` extracts them once per split with the exported
segmenter (:mod:`datamodules.frame_outputs`) and serves them aligned with the frames, with the same crops.

Size: ``samples x 7 frames x 19 classes x h x w x 2 bytes`` of float16. The real Cityscapes val split (500 snippets)
at 128x256 is ``500 * 7 * 19 * 128 * 256 * 2 B = 4.4 GB`` and train (2975 snippets) ``26 GB``, so training
memory-maps the shards instead of loading them, and extraction holds one shard in memory at a time
(``SCORE_SHARD_SIZE * 7 * 19 * h * w * 2`` bytes: 560 MB for 64 snippets at 128x256).

Layout of a score cache (a directory, see :func:`datamodules.cache.write_sharded_cache`)::

    shard_00000.npz ...   "scores" float16 (n, T, 19, h, w) of samples [start, stop)
    manifest.npz          written last

Its metadata names the segmenter: the sha256 of its exported weights file, its architecture and class count.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from datamodules.augment import to_unit_range
from datamodules.cityscapes import CachedSequences
from datamodules.frame_outputs import FLOAT16_MAX, Batch, FrameOutputDataModule, OutputsOf, extract_frame_outputs
from metrics.cityscapes_labels import NUM_EVALUATED_CLASSES
from networks.segmenter import load_exported_segmenter, read_segmenter_export

SCORE_CACHE_KIND = "segmenter_scores"
SCORE_CACHE_VERSION = 1
SCORE_SHARD_SIZE = 64


@torch.no_grad()
def segmenter_scores(segmenter: nn.Module, frames: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float16 scores (N, num_classes, h, w) of uint8 frames (N, 3, h, w) in one forward pass on their device, as the
    cache stores them: bfloat16 autocast on CUDA, clamped to the float16 range."""
    images = to_unit_range(frames)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=images.device.type == "cuda"):
        logits = segmenter(images)
    expected = (len(images), num_classes, *images.shape[-2:])
    if logits.shape != expected:
        raise ValueError(f"the segmenter returned scores of shape {tuple(logits.shape)} for frames of shape "
                         f"{tuple(images.shape)}; expected {expected}")
    return logits.float().clamp(-FLOAT16_MAX, FLOAT16_MAX).half()


def scores_of(segmenter: nn.Module, num_classes: int, batch_size: int, device: str | torch.device) -> OutputsOf:
    """The outputs function of a score cache: ``{"scores": float16 (N, T, num_classes, h, w)}`` of a batch's
    ``frames`` (N, T, 3, h, w), ``batch_size`` frames per forward pass of ``segmenter`` (in eval mode, on
    ``device``)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device)
    segmenter.eval().to(device)

    def outputs(batch: Batch) -> dict[str, np.ndarray]:
        frames = batch["frames"]
        flat = frames.flatten(0, 1)
        scores = np.empty((len(flat), num_classes, *flat.shape[-2:]), dtype=np.float16)
        for start in range(0, len(flat), batch_size):
            chunk = flat[start:start + batch_size].to(device)
            scores[start:start + len(chunk)] = segmenter_scores(segmenter, chunk, num_classes).cpu().numpy()
        return {"scores": scores.reshape(*frames.shape[:2], *scores.shape[1:])}

    return outputs


def extract_scores(segmenter: nn.Module, dataset: CachedSequences, cache_path: str | os.PathLike,
                   meta: Mapping[str, Any], batch_size: int, device: str | torch.device,
                   shard_size: int = SCORE_SHARD_SIZE) -> Path:
    """Run ``segmenter`` over every frame of ``dataset`` (:func:`scores_of`) and store the scores under
    ``cache_path`` (:func:`datamodules.frame_outputs.extract_frame_outputs`; ``meta`` holds ``num_classes``)."""
    outputs = scores_of(segmenter, meta["num_classes"], batch_size, device)
    return extract_frame_outputs(outputs, dataset, cache_path, meta, shard_size, "segmenter scores")


def scores_to_batch(gathered: Mapping[str, np.ndarray]) -> Batch:
    """``scores`` float16 (B, T, C, h, w) and ``segmenter_labels`` uint8 (B, h, w), the argmax of the last frame's."""
    scores = gathered["scores"]
    return {"scores": torch.from_numpy(scores),
            "segmenter_labels": torch.from_numpy(scores[:, -1].argmax(axis=1).astype(np.uint8))}


class SegmentationScoreDataModule(FrameOutputDataModule):
    """:class:`CityscapesSequenceDataModule` batches plus the frozen segmenter's scores of their frames.

    The scores of every cached frame of train and val are extracted once with the exported segmenter
    ``segmenter_weights`` (:class:`datamodules.frame_outputs.FrameOutputDataModule`) into
    ``<cache_dir>/segmenter_scores_<split>_<h>x<w>_<segmenter sha>_<sequences>``. Batches gain ``scores`` float16
    (B, T, 19, h, w), the pre-softmax scores of exactly the frames and crop windows of ``frames``, and
    ``segmenter_labels`` uint8 (B, h, w), the segmenter's segmentation of the annotated (last) frame, the second
    reference of the forecasting evaluation besides ``labels``.

    Prediction: ``predict_split`` batches carry the cached scores like validation batches; ``predict_frames``
    batches get their ``scores`` on the model's device when they arrive there (:meth:`on_after_batch_transfer`),
    from the same segmenter, as extraction computes them.

    Args:
        segmenter_weights: file exported by :class:`lightning_modules.semantic_segmenter.SemanticSegmenter`.
        score_batch_size: frames per segmenter forward pass during extraction.
        extraction_device: where the networks run during extraction (``"auto"``: CUDA when available, else CPU).
        **kwargs: the arguments of :class:`CityscapesSequenceDataModule`.
    """

    output_kind = SCORE_CACHE_KIND
    output_version = SCORE_CACHE_VERSION
    output_shard_size = SCORE_SHARD_SIZE
    outputs_to_batch = staticmethod(scores_to_batch)

    def __init__(self, root: str, segmenter_weights: str, score_batch_size: int = 8, extraction_device: str = "auto",
                 **kwargs: Any) -> None:
        super().__init__(root, extraction_device=extraction_device, **kwargs)
        if score_batch_size <= 0:
            raise ValueError(f"score_batch_size must be positive, got {score_batch_size}")
        self.segmenter_weights = Path(segmenter_weights)
        self.score_batch_size = score_batch_size
        self._segmenter_identity: dict[str, Any] | None = None
        self._predict_segmenter: nn.Module | None = None

    def output_identity(self) -> dict[str, Any]:
        """The exported segmenter's ``segmenter_sha256``, ``architecture`` and ``num_classes`` (read once)."""
        if self._segmenter_identity is None:
            export = read_segmenter_export(self.segmenter_weights)
            if export["num_classes"] != NUM_EVALUATED_CLASSES:
                raise ValueError(f"{self.segmenter_weights} predicts {export['num_classes']} classes; Cityscapes "
                                 f"forecasting uses {NUM_EVALUATED_CLASSES}")
            self._segmenter_identity = {"segmenter_sha256": self.weights_sha256(self.segmenter_weights),
                                        "architecture": export["architecture"], "num_classes": NUM_EVALUATED_CLASSES}
        return self._segmenter_identity

    def output_name_parts(self) -> list[str]:
        return [self.output_identity()["segmenter_sha256"][:12]]

    def load_segmenter(self) -> nn.Module:
        """The exported segmenter the scores are extracted with."""
        return load_exported_segmenter(self.segmenter_weights)

    def output_extractor(self) -> OutputsOf:
        return scores_of(self.load_segmenter(), NUM_EVALUATED_CLASSES, self.score_batch_size, self.device())

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Give ``predict_frames`` batches (the only ones without cached scores) ``scores`` float16 (B, T, 19, h, w),
        computed on the batch's device ``score_batch_size`` frames at a time; other batches pass unchanged."""
        if "scores" in batch:
            return batch
        frames = batch["frames"]
        if self._predict_segmenter is None:
            self._predict_segmenter = self.load_segmenter()
        segmenter = self._predict_segmenter.to(frames.device)
        scores = [segmenter_scores(segmenter, chunk, NUM_EVALUATED_CLASSES)
                  for chunk in frames.flatten(0, 1).split(self.score_batch_size)]
        batch["scores"] = torch.cat(scores).unflatten(0, frames.shape[:2])
        return batch

    def describe(self) -> dict[str, Any]:
        """The parent's summary plus the segmenter the scores come from."""
        identity = self.output_identity()
        return {**super().describe(), "segmenter": str(self.segmenter_weights),
                "segmenter_architecture": identity["architecture"],
                "segmenter_sha256": identity["segmenter_sha256"][:12]}
