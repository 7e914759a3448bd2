"""Cached segmenter scores of the Cityscapes snippet frames: the inputs and targets of the S2S forecasters.

The S2S models of Luc et al. (2017) read the pre-softmax class scores of a frozen segmenter for past frames and
predict those of future frames. Running the segmenter on every frame at every step would dominate training, so
:func:`extract_scores` runs it once over every cached frame of a split and stores the scores as float16 next to the
sequence cache; :class:`SegmentationScoreDataModule` serves them aligned with the frames, with the same crops.

Size: the scores take ``samples x 7 frames x 19 classes x h x w x 2 bytes``. The real Cityscapes val split (500
snippets) at 128x256 is ``500 * 7 * 19 * 128 * 256 * 2 B = 4.4 GB`` and train (2975 snippets) ``26 GB``, so the
scores are stored in shards (uncompressed ``.npz`` written atomically with :func:`datamodules.cache.write_array_cache`)
that training memory-maps instead of loading, and extraction holds one shard in memory at a time
(``shard_size * 7 * 19 * h * w * 2`` bytes: 560 MB for 64 snippets at 128x256).

Layout of a score cache (a directory)::

    shard_00000.npz ...   "scores" float16 (n, T, 19, h, w) of samples [start, stop); meta + shard/start/stop
    manifest.npz          written last: "shard_stops" int64 (num_shards,); meta + num_samples/shard_size/num_shards

Extraction is resumable: finished shards are kept and skipped, and a shard only ever exists complete (atomic
rename), so an interrupted run never leaves a partial shard to read. The metadata names the segmenter (sha256 of its
exported weights file and its architecture), the split, resolution, snippet frame indices and the fingerprint of the
sequence cache the frames come from; a cache (or any shard) made with another segmenter or other frames is refused
with a :class:`datamodules.cache.CacheError` naming the mismatching key and both values, never mixed in.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from datamodules.augment import to_unit_range
from datamodules.cache import CacheError, ShardedArrayCache, sharded_cache_complete, write_sharded_cache
from datamodules.cityscapes import CachedSequences, CityscapesSequenceDataModule
from metrics.cityscapes_labels import NUM_EVALUATED_CLASSES
from networks.segmenter import load_exported_segmenter, read_segmenter_export

log = logging.getLogger(__name__)

SCORE_CACHE_KIND = "segmenter_scores"
SCORE_CACHE_VERSION = 1
FLOAT16_MAX = float(np.finfo(np.float16).max)
_HASH_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (the fingerprint of an exported segmenter)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; anything else is a torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def score_cache_meta(segmenter_sha256: str, architecture: str, num_classes: int,
                     sequence_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata a score cache must match: the segmenter, and the split, frames and resolution of its sequences.

    ``sequence_meta`` is the metadata of the sequence cache the frames come from
    (:func:`datamodules.cityscapes.sequence_cache_meta`).
    """
    return {"kind": SCORE_CACHE_KIND, "version": SCORE_CACHE_VERSION, "segmenter_sha256": segmenter_sha256,
            "architecture": architecture, "num_classes": num_classes, "split": sequence_meta["split"],
            "resolution": list(sequence_meta["resolution"]), "frame_indices": list(sequence_meta["frame_indices"]),
            "sequence_fingerprint": sequence_meta["fingerprint"]}


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


def _segment(segmenter: nn.Module, frames: torch.Tensor, num_classes: int, batch_size: int,
             device: torch.device) -> np.ndarray:
    """float16 scores (N, num_classes, h, w) of uint8 frames (N, 3, h, w), ``batch_size`` frames per forward pass."""
    height, width = frames.shape[-2:]
    scores = np.empty((len(frames), num_classes, height, width), dtype=np.float16)
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size].to(device)
        scores[start:start + len(chunk)] = segmenter_scores(segmenter, chunk, num_classes).cpu().numpy()
    return scores


def extract_scores(segmenter: nn.Module, dataset: CachedSequences, cache_path: str | os.PathLike,
                   meta: Mapping[str, Any], batch_size: int, device: str | torch.device,
                   shard_size: int = 64) -> Path:
    """Run ``segmenter`` over every frame of ``dataset`` and store its scores under ``cache_path``; return it.

    ``dataset`` is the split's :class:`CachedSequences` opened on all cached frames without crops; ``meta`` (see
    :func:`score_cache_meta`) must hold its ``resolution``, ``frame_indices`` and ``num_classes``. The segmenter
    maps images in [-1, 1] to logits of the same size; it runs in eval mode without gradients on ``device``,
    ``batch_size`` frames at a time, under bfloat16 autocast on CUDA. Scores are stored as float16 (clamped to its
    range) in shards of ``shard_size`` samples, then the manifest is written. Finished shards of an interrupted
    extraction are kept; a shard or manifest with other metadata raises :class:`CacheError` (never overwritten,
    never mixed). Real Cityscapes at 128x256 takes 4.4 GB (val) and 26 GB (train); see the module docstring.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if dataset.crop_size is not None:
        raise ValueError("scores are extracted from whole frames; open the dataset with crop_size=None")
    device = torch.device(device)
    frame_count, resolution = len(meta["frame_indices"]), tuple(meta["resolution"])
    segmenter.eval().to(device)

    def score_shard(start: int, stop: int) -> dict[str, np.ndarray]:
        frames = dataset[torch.arange(start, stop)]["frames"]
        if frames.shape[1] != frame_count or tuple(frames.shape[-2:]) != resolution:
            raise ValueError(f"the dataset's frames have shape {tuple(frames.shape[1:])} but the score cache meta "
                             f"says {frame_count} frames at {resolution}")
        scores = _segment(segmenter, frames.flatten(0, 1), meta["num_classes"], batch_size, device)
        return {"scores": scores.reshape(len(frames), frame_count, *scores.shape[1:])}

    return write_sharded_cache(cache_path, meta, len(dataset), shard_size, score_shard, "segmenter scores")


class SegmentationScores(ShardedArrayCache):
    """The memory-mapped score shards of one finished extraction, checked against ``expect_meta``.

    ``gather(indices, frame_positions, windows, size)`` returns float16 (B, T, C, h, w): for each sample the frames
    at ``frame_positions`` (positions among the cached frames) cropped to ``size`` at its ``(top, left)`` window.
    Like :class:`CachedSequences` the shards are reopened in each worker process rather than pickled.
    """

    def gather(self, indices: np.ndarray, frame_positions: np.ndarray, windows: Sequence[tuple[int, int]],
               size: tuple[int, int]) -> np.ndarray:
        height, width = size
        parts = []
        for index, (top, left) in zip(indices.tolist(), windows):
            shard, offset = self.locate(index)
            parts.append(shard["scores"][offset, frame_positions, :, top:top + height, left:left + width])
        return np.stack(parts)


class ScoredSequences(Dataset):
    """A :class:`CachedSequences` whose batches also carry the segmenter's scores of the same frames and crops.

    Adds ``scores`` float16 (B, T, C, h, w), aligned with ``frames`` (same frames, same crop windows, taken from
    the sequences' own :meth:`CachedSequences.crop_windows`), and ``segmenter_labels`` uint8 (B, h, w), the argmax
    of the scores of the last frame (the annotated one).
    """

    def __init__(self, sequences: CachedSequences, scores: SegmentationScores) -> None:
        if len(scores) != len(sequences):
            raise CacheError(f"{scores.cache_path} holds scores of {len(scores)} snippets but the sequence cache "
                             f"{sequences.cache_path} has {len(sequences)}")
        self.sequences = sequences
        self.scores = scores

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = self.sequences[indices]
        sample_indices = batch["index"].numpy()
        windows = self.sequences.crop_windows(sample_indices)
        scores = self.scores.gather(sample_indices, self.sequences.frame_positions, windows,
                                    tuple(batch["frames"].shape[-2:]))
        batch["scores"] = torch.from_numpy(scores)
        batch["segmenter_labels"] = torch.from_numpy(scores[:, -1].argmax(axis=1).astype(np.uint8))
        return batch


class SegmentationScoreDataModule(CityscapesSequenceDataModule):
    """:class:`CityscapesSequenceDataModule` batches plus the frozen segmenter's scores of their frames.

    ``prepare_data`` (rank 0) builds the sequence caches, then extracts the scores of every cached frame of train
    and val with the exported segmenter ``segmenter_weights`` unless a finished extraction exists (resuming an
    interrupted one); they go to ``<cache_dir>/segmenter_scores_<split>_<h>x<w>_<segmenter sha>_<sequences>``, so
    a retrained segmenter or changed frames get a new directory (old ones are left for the user to delete).
    Batches gain ``scores`` float16 (B, T, 19, h, w), the pre-softmax scores of exactly the frames and crop windows of
    ``frames``, and ``segmenter_labels`` uint8 (B, h, w), the segmenter's segmentation of the annotated (last)
    frame, the second reference of the forecasting evaluation besides ``labels``.

    Prediction: ``predict_split`` batches carry the cached scores like validation batches; ``predict_frames``
    batches get their ``scores`` on the model's device when they arrive there (:meth:`on_after_batch_transfer`),
    from the same segmenter, as extraction computes them.

    Args:
        segmenter_weights: file exported by :class:`lightning_modules.semantic_segmenter.SemanticSegmenter`.
        score_batch_size: frames per segmenter forward pass during extraction.
        extraction_device: ``"auto"`` (CUDA when available, else CPU) or a torch device string.
        **kwargs: the arguments of :class:`CityscapesSequenceDataModule`.
    """

    def __init__(self, root: str, segmenter_weights: str, score_batch_size: int = 8, extraction_device: str = "auto",
                 **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        if score_batch_size <= 0:
            raise ValueError(f"score_batch_size must be positive, got {score_batch_size}")
        self.segmenter_weights = Path(segmenter_weights)
        self.score_batch_size = score_batch_size
        self.extraction_device = extraction_device
        self._segmenter_identity: tuple[str, str, int] | None = None
        self._predict_segmenter: nn.Module | None = None

    def segmenter_identity(self) -> tuple[str, str, int]:
        """``(sha256, architecture, num_classes)`` of the exported segmenter file (read once)."""
        if self._segmenter_identity is None:
            export = read_segmenter_export(self.segmenter_weights)
            if export["num_classes"] != NUM_EVALUATED_CLASSES:
                raise ValueError(f"{self.segmenter_weights} predicts {export['num_classes']} classes; Cityscapes "
                                 f"forecasting uses {NUM_EVALUATED_CLASSES}")
            self._segmenter_identity = (file_sha256(self.segmenter_weights), export["architecture"], NUM_EVALUATED_CLASSES)
        return self._segmenter_identity

    def score_meta(self, split: str) -> dict[str, Any]:
        """The metadata the score cache of ``split`` must match."""
        return score_cache_meta(*self.segmenter_identity(), self._cache_meta(split))

    def score_cache_path(self, split: str) -> Path:
        """The score cache directory of ``split`` for this segmenter, resolution and sequence cache."""
        height, width = self.resolution
        sha256 = self.segmenter_identity()[0]
        fingerprint = self._cache_meta(split)["fingerprint"]
        return self.cache_dir / f"segmenter_scores_{split}_{height}x{width}_{sha256[:12]}_{fingerprint[:12]}"

    def load_segmenter(self) -> nn.Module:
        """The exported segmenter the scores are extracted with."""
        return load_exported_segmenter(self.segmenter_weights)

    def prepare_data(self) -> None:
        """Build the sequence caches, then extract the scores of each split unless they are complete (rank 0)."""
        super().prepare_data()
        segmenter = None
        for split in self.prepared_splits():
            cache_path, meta = self.score_cache_path(split), self.score_meta(split)
            if sharded_cache_complete(cache_path, meta):
                log.info("reusing segmenter scores %s", cache_path)
                continue
            if segmenter is None:
                segmenter = self.load_segmenter()
            frames = CachedSequences(self.cache_path(split), self._cache_meta(split), range(len(self.cached_indices)),
                                     crop_size=None, with_instances=False)
            log.info("extracting segmenter scores of %d %s snippets to %s", len(frames), split, cache_path)
            extract_scores(segmenter, frames, cache_path, meta, self.score_batch_size, resolve_device(self.extraction_device))

    def _with_scores(self, sequences: CachedSequences | ScoredSequences | None, split: str) -> ScoredSequences | None:
        if not isinstance(sequences, CachedSequences):
            return sequences
        try:
            scores = SegmentationScores(self.score_cache_path(split), self.score_meta(split))
        except CacheError as error:
            hint = "prepare_data() extracts the scores; the Trainer calls it before setup"
            raise CacheError(f"{error} ({hint})") from error
        return ScoredSequences(sequences, scores)

    def setup(self, stage: str | None = None) -> None:
        """Open the sequence caches (see the parent) and pair each with its split's scores."""
        super().setup(stage)
        self.train_set = self._with_scores(self.train_set, "train")
        self.val_set = self._with_scores(self.val_set, "val")
        self.predict_set = self._with_scores(self.predict_set, self.predict_split)

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
        sha256, architecture, _num_classes = self.segmenter_identity()
        return {**super().describe(), "segmenter": str(self.segmenter_weights), "segmenter_architecture": architecture,
                "segmenter_sha256": sha256[:12]}
