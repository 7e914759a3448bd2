"""Cached FPN features of the frozen F2F detector (Luc et al. 2018).

The F2F forecaster trains on the FPN features of a frozen Mask R-CNN. Extracting them on the fly costs a detector
backbone pass over every frame of every step; :func:`extract_features` runs the exported detector once over every
cached frame of a split (bfloat16 autocast on CUDA, as :meth:`lightning_modules.F2FForecaster.features`) and stores
the chosen levels as float16 (:mod:`datamodules.frame_outputs`); :class:`FPNFeatureDataModule` serves them with the
frames as ``features_<level>`` and the forecaster's ``training_step`` then skips the detector.

A cache must fit ``max_cache_gib``: :func:`feature_cache_bytes` computes its size before anything is written and
:func:`cache_size_refusal` refuses one over the budget with the arithmetic (docs/f2f.md works it out for Cityscapes:
only the coarse levels fit a disk; levels left out are extracted on the fly). Only the train split is cached:
validation runs the detector anyway.

Layout of a feature cache (a directory, see :func:`datamodules.cache.write_sharded_cache`)::

    shard_00000.npz ...   "<level>" float16 (n, T, 256, h_l, w_l) per cached level of snippets [start, stop)
    manifest.npz          written last

Its metadata names the detector (sha256 of its exported file) and the levels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from datamodules.cityscapes import CachedSequences
from datamodules.frame_outputs import FLOAT16_MAX, Batch, FrameOutputDataModule, OutputsOf, extract_frame_outputs
from networks.detector import FPN_CHANNELS, FPN_LEVELS, FPN_STRIDES, fpn_features, load_exported_detector

FEATURE_CACHE_KIND = "fpn_features"
FEATURE_CACHE_VERSION = 1
CACHEABLE_LEVELS = ("p5", "p4", "p3", "p2")
"""The levels a feature cache may hold, coarse to fine (within ``max_cache_gib``: see the module docstring)."""
DEFAULT_MAX_CACHE_GIB = 512.0
"""Admits Cityscapes' P5, P4 and P3 at 1024x2048 and refuses its P2 (docs/f2f.md)."""
FEATURE_SHARD_SIZE = 32
"""Snippets per shard, all held in memory during extraction: 32 x 7 frames of P5+P4+P3 at 1024x2048 are 4.6 GiB."""
PADDING_MULTIPLE = 32
"""The detector's transform pads frames to a multiple of this before the backbone."""


def feature_map_shape(level: str, resolution: tuple[int, int]) -> tuple[int, int, int]:
    """``(channels, h, w)`` of one frame's FPN map at ``level`` for frames of ``resolution`` (not resized)."""
    stride = FPN_STRIDES[FPN_LEVELS.index(level)]
    padded = [math.ceil(size / PADDING_MULTIPLE) * PADDING_MULTIPLE for size in resolution]
    return FPN_CHANNELS, padded[0] // stride, padded[1] // stride


def _format_bytes(count: int) -> str:
    """``count`` bytes to 3 significant digits in binary units, then in decimal ones: ``"1.27 TiB (1.40 TB)"``."""
    parts = []
    for base, units in ((1024, ("B", "KiB", "MiB", "GiB", "TiB")), (1000, ("B", "kB", "MB", "GB", "TB"))):
        exponent = 0
        while exponent < len(units) - 1 and count >= base ** (exponent + 1):
            exponent += 1
        value = count / base ** exponent
        decimals = max(0, 2 - math.floor(math.log10(value))) if value > 0 else 0
        parts.append(f"{value:.{decimals}f} {units[exponent]}")
    return f"{parts[0]} ({parts[1]})"


def feature_cache_bytes(levels: Sequence[str], resolution: tuple[int, int], snippets: int,
                        frames_per_snippet: int) -> dict[str, int]:
    """Bytes of each level's float16 features for ``snippets`` x ``frames_per_snippet`` frames of ``resolution``."""
    return {level: snippets * frames_per_snippet * 2 * math.prod(feature_map_shape(level, resolution))
            for level in levels}


def cache_size_refusal(levels: Sequence[str], resolution: tuple[int, int], snippets: int, frames_per_snippet: int,
                       max_cache_gib: float) -> str | None:
    """Why a feature cache of ``levels`` would exceed ``max_cache_gib``, with the disk arithmetic; None if it fits."""
    sizes = feature_cache_bytes(levels, resolution, snippets, frames_per_snippet)
    if sum(sizes.values()) <= max_cache_gib * 2 ** 30:
        return None
    maps = snippets * frames_per_snippet
    height, width = resolution
    per_level = []
    for level, size in sizes.items():
        channels, level_height, level_width = feature_map_shape(level, resolution)
        per_level.append(f"{level.upper()} {channels} x {level_height} x {level_width} values per map, "
                         f"{_format_bytes(size)}")
    return (f"a feature cache of {'/'.join(level.upper() for level in levels)} at {height}x{width} would take "
            f"{_format_bytes(sum(sizes.values()))} in float16, over max_cache_gib = {max_cache_gib:g}: "
            f"{snippets:,} training snippets x {frames_per_snippet} cached frames = {maps:,} maps per level "
            f"({'; '.join(per_level)}). Cache fewer levels (the forecaster extracts the others on the fly) or "
            f"raise max_cache_gib if the disk holds it.")


def cacheable_levels(levels: Sequence[str]) -> tuple[str, ...]:
    """``levels`` in the canonical coarse-to-fine order; ``ValueError`` for unknown levels, duplicates or none."""
    unknown = sorted(set(levels) - set(CACHEABLE_LEVELS))
    if unknown or not levels or len(set(levels)) != len(levels):
        raise ValueError(f"cached_levels must be distinct levels among {list(CACHEABLE_LEVELS)}, got {list(levels)}")
    return tuple(level for level in CACHEABLE_LEVELS if level in levels)


def features_of(detector: nn.Module, levels: Sequence[str], batch_size: int, device: str | torch.device) -> OutputsOf:
    """The outputs function of a feature cache: per level float16 (N, T, 256, h_l, w_l) of a batch's ``frames``
    (N, T, 3, h, w), ``batch_size`` frames per backbone pass of ``detector`` (in eval mode, on ``device``, under
    bfloat16 autocast on CUDA: :func:`networks.detector.fpn_features`, the forecaster's own extraction)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device)
    detector.eval().to(device)

    @torch.no_grad()
    def outputs(batch: Batch) -> dict[str, np.ndarray]:
        frames = batch["frames"]
        flat = frames.flatten(0, 1)
        features: dict[str, np.ndarray] = {}
        for start in range(0, len(flat), batch_size):
            images = flat[start:start + batch_size].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                pyramid = fpn_features(detector, images).features
            for level in levels:
                level_features = pyramid[level].float().clamp(-FLOAT16_MAX, FLOAT16_MAX).half().cpu().numpy()
                if level not in features:
                    features[level] = np.empty((len(flat), *level_features.shape[1:]), dtype=np.float16)
                features[level][start:start + len(images)] = level_features
        return {level: value.reshape(*frames.shape[:2], *value.shape[1:]) for level, value in features.items()}

    return outputs


def extract_features(detector: nn.Module, dataset: CachedSequences, cache_path: str | os.PathLike,
                     meta: Mapping[str, Any], batch_size: int, device: str | torch.device,
                     shard_size: int = FEATURE_SHARD_SIZE) -> Path:
    """Run ``detector``'s backbone over every frame of ``dataset`` (:func:`features_of`) and store the
    ``meta["levels"]`` features under ``cache_path`` (:func:`datamodules.frame_outputs.extract_frame_outputs`)."""
    outputs = features_of(detector, meta["levels"], batch_size, device)
    return extract_frame_outputs(outputs, dataset, cache_path, meta, shard_size, "FPN features")


def features_to_batch(gathered: Mapping[str, np.ndarray]) -> Batch:
    """``features_<level>`` float16 (B, T, 256, h_l, w_l) per cached level: the keys
    :func:`lightning_modules.f2f_forecaster.cached_feature_key` names (not imported: that module is a layer above)."""
    return {f"features_{level}": torch.from_numpy(values) for level, values in gathered.items()}


class FPNFeatureDataModule(FrameOutputDataModule):
    """:class:`CityscapesSequenceDataModule` batches plus the frozen detector's cached FPN features of their frames.

    When fitting, the ``cached_levels`` features of every cached frame of the train split (validation always runs the
    detector) are extracted once with the exported detector ``detector_weights``
    (:class:`datamodules.frame_outputs.FrameOutputDataModule`) into
    ``<cache_dir>/fpn_features_<split>_<h>x<w>_<levels>_<detector sha>_<sequences>``. Training batches gain
    ``features_<level>`` float16 (B, T, 256, h_l, w_l) for each cached level, the features of exactly the frames of
    ``frames``; :class:`lightning_modules.F2FForecaster` trains on them instead of running the detector when they
    cover its ``train_levels``. The detector must be the forecaster's own (the F2F config overlay
    ``configs/f2f/feature_cache/coarse.yaml`` interpolates it from the model).

    Args:
        detector_weights: file exported by :class:`lightning_modules.mask_rcnn_finetune.MaskRCNNFinetune`.
        cached_levels: any of ``p5``, ``p4``, ``p3``, ``p2``.
        max_cache_gib: the largest train feature cache to write; a larger one is refused in ``prepare_data``,
            before anything is extracted, with the disk arithmetic (default: see :data:`DEFAULT_MAX_CACHE_GIB`).
        extraction_batch_size: frames per detector forward pass during extraction.
        crop_size: must be ``None``: features are cached for whole frames and are not cropped.
        extraction_device: where the networks run during extraction (``"auto"``: CUDA when available, else CPU).
        **kwargs: the arguments of :class:`CityscapesSequenceDataModule`.
    """

    output_kind = FEATURE_CACHE_KIND
    output_version = FEATURE_CACHE_VERSION
    output_shard_size = FEATURE_SHARD_SIZE
    outputs_to_batch = staticmethod(features_to_batch)
    paired_sets = ("train_set",)

    def __init__(self, root: str, detector_weights: str, cached_levels: Sequence[str] = ("p5", "p4"),
                 extraction_batch_size: int = 8, extraction_device: str = "auto", crop_size: int | None = None,
                 max_cache_gib: float = DEFAULT_MAX_CACHE_GIB, **kwargs: Any) -> None:
        if crop_size is not None:
            raise ValueError(f"crop_size is {crop_size}, but cached FPN features are of whole frames and feature crops "
                             "are not supported; set crop_size: null (the F2F configs train on whole frames)")
        super().__init__(root, extraction_device=extraction_device, crop_size=None, **kwargs)
        if extraction_batch_size <= 0:
            raise ValueError(f"extraction_batch_size must be positive, got {extraction_batch_size}")
        self.cached_levels = cacheable_levels(list(cached_levels))
        self.max_cache_gib = max_cache_gib
        self.detector_weights = Path(detector_weights)
        self.extraction_batch_size = extraction_batch_size

    def detector_sha256(self) -> str:
        """sha256 of the exported detector file (read once)."""
        if not self.detector_weights.is_file():
            raise FileNotFoundError(f"{self.detector_weights} does not exist: cached FPN features need the exported "
                                    "detector; train it first with `genforecast fit --config "
                                    "configs/f2f/detector.yaml`")
        return self.weights_sha256(self.detector_weights)

    def output_identity(self) -> dict[str, Any]:
        return {"detector_sha256": self.detector_sha256(), "levels": list(self.cached_levels)}

    def output_name_parts(self) -> list[str]:
        return ["".join(self.cached_levels), self.detector_sha256()[:12]]

    def output_splits(self) -> tuple[str, ...]:
        """The train split when fitting: only training reads cached features (validation runs the detector on the
        whole pyramid), so val is never extracted, and a ``validate``,
        ``test`` or ``predict`` run extracts nothing."""
        fitting = self.trainer is None or self.trainer.state.fn == TrainerFn.FITTING
        return ("train",) if fitting else ()

    def output_extractor(self) -> OutputsOf:
        return features_of(load_exported_detector(self.detector_weights), self.cached_levels,
                           self.extraction_batch_size, self.device())

    def prepare_data(self) -> None:
        """Refuse a train cache over ``max_cache_gib`` before anything is written, then prepare as the parent."""
        if "train" in self.output_splits():
            refusal = cache_size_refusal(self.cached_levels, self.resolution, len(self.samples("train")),
                                         len(self.cached_indices), self.max_cache_gib)
            if refusal is not None:
                raise ValueError(refusal)
        super().prepare_data()

    def describe(self) -> dict[str, Any]:
        """The parent's summary plus the detector and levels the features come from."""
        return {**super().describe(), "detector": str(self.detector_weights),
                "detector_sha256": self.detector_sha256()[:12], "cached_levels": list(self.cached_levels)}
