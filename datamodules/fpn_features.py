"""Cached FPN features of the frozen F2F detector (Luc et al. 2018).

The F2F forecaster trains on the FPN features of a frozen Mask R-CNN. Extracting them on the fly costs a detector
backbone pass over every frame of every step; :func:`extract_features` runs the exported detector once over every
cached frame of a split (bfloat16 autocast on CUDA, as :meth:`lightning_modules.F2FForecaster.features`) and stores
the chosen levels as float16; :class:`FPNFeatureDataModule` serves them with the frames as ``features_<level>``
and the forecaster's ``training_step`` then skips the detector.

A cache must fit ``max_cache_gib`` (:func:`feature_cache_bytes`), checked before anything is written. A level of
stride ``s`` holds ``256 x H/s x W/s`` values per frame (the FPN has 256 channels); at the paper's 1024x2048 in
float16 that is 1 MiB (P5), 4 MiB (P4), 16 MiB (P3) and 64 MiB (P2, ``256 x 256 x 512`` values). Cityscapes train
has 2,975 snippets of 7 cached frames, 20,825 maps per level: 20.3 GiB (P5), 81.3 GiB (P4), 325 GiB (P3) and
1.27 TiB (P2). The default limit of 512 GiB admits the coarse levels (427 GiB) and refuses P2, which the forecaster
then extracts on the fly; at the CPU demo's 128x256 all four levels of its 18 snippets take 167 MiB and are cached.
Only the train split is cached: validation runs the detector anyway.

Layout of a feature cache (a directory)::

    shard_00000.npz ...   "<level>" float16 (n, T, 256, h_l, w_l) per cached level of snippets [start, stop);
                          meta + shard/start/stop
    manifest.npz          written last: "shard_stops" int64 (num_shards,); meta + num_samples/shard_size/num_shards

Shards are written atomically (:func:`datamodules.cache.write_array_cache`), one at a time, so an interrupted
extraction keeps its finished shards and resumes after them. The metadata names the detector (sha256 of its
exported file), the levels, the split, resolution, snippet frame indices and the fingerprint of the sequence cache
the frames come from; a cache or shard made otherwise is refused with a :class:`datamodules.cache.CacheError`
naming the key and both values, never mixed in. Another detector's features go to another directory.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.utils.data import Dataset

from datamodules.cache import CacheError, ShardedArrayCache, read_blocks, sharded_cache_complete, write_sharded_cache
from datamodules.cityscapes import CachedSequences, CityscapesSequenceDataModule
from datamodules.segmentation_scores import FLOAT16_MAX, file_sha256, resolve_device
from networks.detector import FPN_CHANNELS, FPN_LEVELS, FPN_STRIDES, fpn_features, load_exported_detector

log = logging.getLogger(__name__)

FEATURE_CACHE_KIND = "fpn_features"
FEATURE_CACHE_VERSION = 1
CACHEABLE_LEVELS = ("p5", "p4", "p3", "p2")
"""The levels a feature cache may hold, coarse to fine (within ``max_cache_gib``: see the module docstring)."""
DEFAULT_MAX_CACHE_GIB = 512.0
"""Admits Cityscapes' P5, P4 and P3 at 1024x2048 (427 GiB) and refuses its P2 (1.27 TiB more)."""
FEATURE_SHARD_SIZE = 32
"""Snippets per shard: at 1024x2048, 32 snippets x 7 frames of P5+P4+P3 are 4.6 GiB held during extraction."""
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


def feature_cache_meta(detector_sha256: str, levels: Sequence[str], sequence_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata a feature cache must match: the detector, the levels, and the split, frames and resolution of
    its sequences (``sequence_meta``: :func:`datamodules.cityscapes.sequence_cache_meta` of the sequence cache)."""
    return {"kind": FEATURE_CACHE_KIND, "version": FEATURE_CACHE_VERSION, "detector_sha256": detector_sha256,
            "levels": list(levels), "split": sequence_meta["split"], "resolution": list(sequence_meta["resolution"]),
            "frame_indices": list(sequence_meta["frame_indices"]), "sequence_fingerprint": sequence_meta["fingerprint"]}


@torch.no_grad()
def _extract_levels(detector: nn.Module, frames: torch.Tensor, levels: Sequence[str], batch_size: int,
                    device: torch.device) -> dict[str, np.ndarray]:
    """float16 features (N, 256, h_l, w_l) per level of uint8 frames (N, 3, h, w), ``batch_size`` frames a pass."""
    features: dict[str, np.ndarray] = {}
    for start in range(0, len(frames), batch_size):
        images = frames[start:start + batch_size].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pyramid = fpn_features(detector, images).features
        for level in levels:
            level_features = pyramid[level].float().clamp(-FLOAT16_MAX, FLOAT16_MAX).half().cpu().numpy()
            if level not in features:
                features[level] = np.empty((len(frames), *level_features.shape[1:]), dtype=np.float16)
            features[level][start:start + len(images)] = level_features
    return features


def extract_features(detector: nn.Module, dataset: CachedSequences, cache_path: str | os.PathLike,
                     meta: Mapping[str, Any], batch_size: int, device: str | torch.device,
                     shard_size: int = FEATURE_SHARD_SIZE) -> Path:
    """Run ``detector``'s backbone over every frame of ``dataset`` and store the ``meta["levels"]`` features under
    ``cache_path``; return it.

    ``dataset`` is the split's :class:`CachedSequences` opened on all cached frames without crops; ``meta`` (see
    :func:`feature_cache_meta`) must hold its ``resolution``, ``frame_indices`` and ``levels``. The detector runs
    in eval mode without gradients on ``device``, ``batch_size`` frames at a time, under bfloat16 autocast on CUDA
    (:func:`networks.detector.fpn_features`, the forecaster's own extraction). Features are stored as float16
    (clamped to its range) in shards of ``shard_size`` snippets, then the manifest is written. Finished shards of an
    interrupted extraction are kept; a shard or manifest with other metadata raises :class:`CacheError` (never
    overwritten, never mixed).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if dataset.crop_size is not None:
        raise ValueError("features are extracted from whole frames; open the dataset with crop_size=None")
    device = torch.device(device)
    frame_count, resolution = len(meta["frame_indices"]), tuple(meta["resolution"])
    detector.eval().to(device)

    def feature_shard(start: int, stop: int) -> dict[str, np.ndarray]:
        frames = dataset[torch.arange(start, stop)]["frames"]
        if frames.shape[1] != frame_count or tuple(frames.shape[-2:]) != resolution:
            raise ValueError(f"the dataset's frames have shape {tuple(frames.shape[1:])} but the feature cache meta "
                             f"says {frame_count} frames at {resolution}")
        features = _extract_levels(detector, frames.flatten(0, 1), meta["levels"], batch_size, device)
        return {level: value.reshape(len(frames), frame_count, *value.shape[1:]) for level, value in features.items()}

    return write_sharded_cache(cache_path, meta, len(dataset), shard_size, feature_shard, "FPN features")


class FPNFeatures(ShardedArrayCache):
    """The memory-mapped feature shards of one finished extraction, checked against ``expect_meta``.

    ``gather(indices, frame_positions)`` returns, per cached level, float16 (B, T, 256, h_l, w_l): for each sample
    the frames at ``frame_positions`` (positions among the cached frames). Like :class:`CachedSequences` the shards
    are reopened in each worker process rather than pickled.
    """

    def __init__(self, cache_path: str | os.PathLike, expect_meta: Mapping[str, Any]) -> None:
        super().__init__(cache_path, expect_meta)
        self.levels = tuple(self.manifest_meta["levels"])

    def gather(self, indices: np.ndarray, frame_positions: np.ndarray) -> dict[str, np.ndarray]:
        located = [self.locate(index) for index in indices.tolist()]
        gathered = {}
        for level in self.levels:
            first = located[0][0][level]
            out = np.empty((len(located), len(frame_positions), *first.shape[2:]), dtype=first.dtype)
            for sample, (shard, offset) in enumerate(located):  # read from the file, not through the map: 2x faster
                read_blocks(shard[level], [(offset, int(position)) for position in frame_positions], out=out[sample])
            gathered[level] = out
        return gathered


class FeatureSequences(Dataset):
    """A :class:`CachedSequences` (whole frames) whose batches also carry the cached FPN features of their frames.

    Adds ``features_<level>`` float16 (B, T, 256, h_l, w_l) per cached level, for the same frames as ``frames``: the
    keys :func:`lightning_modules.f2f_forecaster.cached_feature_key` names (not imported here: the forecaster's module
    imports :mod:`datamodules`).
    """

    def __init__(self, sequences: CachedSequences, features: FPNFeatures) -> None:
        if sequences.crop_size is not None:
            raise ValueError("cached FPN features are of whole frames; crops are not supported (set crop_size: null)")
        if len(features) != len(sequences):
            raise CacheError(f"{features.cache_path} holds features of {len(features)} snippets but the sequence "
                             f"cache {sequences.cache_path} has {len(sequences)}")
        self.sequences = sequences
        self.features = features

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = self.sequences[indices]
        features = self.features.gather(batch["index"].numpy(), self.sequences.frame_positions)
        for level, values in features.items():
            batch[f"features_{level}"] = torch.from_numpy(values)
        return batch


class FPNFeatureDataModule(CityscapesSequenceDataModule):
    """:class:`CityscapesSequenceDataModule` batches plus the frozen detector's cached FPN features of their frames.

    ``prepare_data`` (rank 0) builds the sequence caches, then extracts the ``cached_levels`` features of every
    cached frame of the train split (validation always runs the detector) with the exported detector
    ``detector_weights`` unless a finished extraction exists (resuming an interrupted one); they go to
    ``<cache_dir>/fpn_features_<split>_<h>x<w>_<levels>_<detector sha>_<sequences>``, so another detector, other
    levels or changed frames get a new directory (old ones are left for the user to delete). Batches gain
    ``features_<level>`` float16 (B, T, 256, h_l, w_l) for each cached level, the features of exactly the frames
    of ``frames``; :class:`lightning_modules.F2FForecaster` trains on them instead of running the detector when
    they cover its ``train_levels``. The detector must be the forecaster's own (the F2F config overlay
    ``configs/f2f/feature_cache/coarse.yaml`` interpolates it from the model).

    Args:
        detector_weights: file exported by :class:`lightning_modules.mask_rcnn_finetune.MaskRCNNFinetune`.
        cached_levels: any of ``p5``, ``p4``, ``p3``, ``p2``.
        max_cache_gib: the largest train feature cache to write; a larger one is refused in ``prepare_data``,
            before anything is extracted, with the disk arithmetic (default: see :data:`DEFAULT_MAX_CACHE_GIB`).
        extraction_batch_size: frames per detector forward pass during extraction.
        extraction_device: ``"auto"`` (CUDA when available, else CPU) or a torch device string.
        crop_size: must be ``None``: features are cached for whole frames and are not cropped.
        **kwargs: the arguments of :class:`CityscapesSequenceDataModule`.
    """

    def __init__(self, root: str, detector_weights: str, cached_levels: Sequence[str] = ("p5", "p4"),
                 extraction_batch_size: int = 8, extraction_device: str = "auto", crop_size: int | None = None,
                 max_cache_gib: float = DEFAULT_MAX_CACHE_GIB, **kwargs: Any) -> None:
        if crop_size is not None:
            raise ValueError(f"crop_size is {crop_size}, but cached FPN features are of whole frames and feature crops "
                             "are not supported; set crop_size: null (the F2F configs train on whole frames)")
        super().__init__(root, crop_size=None, **kwargs)
        if extraction_batch_size <= 0:
            raise ValueError(f"extraction_batch_size must be positive, got {extraction_batch_size}")
        self.cached_levels = cacheable_levels(list(cached_levels))
        self.max_cache_gib = max_cache_gib
        self.detector_weights = Path(detector_weights)
        self.extraction_batch_size = extraction_batch_size
        self.extraction_device = extraction_device
        self._detector_sha256: str | None = None

    def detector_sha256(self) -> str:
        """sha256 of the exported detector file (read once)."""
        if self._detector_sha256 is None:
            if not self.detector_weights.is_file():
                raise FileNotFoundError(f"{self.detector_weights} does not exist: cached FPN features need the exported "
                                        "detector; train it first with `genforecast fit --config "
                                        "configs/f2f/detector.yaml`")
            self._detector_sha256 = file_sha256(self.detector_weights)
        return self._detector_sha256

    def feature_meta(self, split: str) -> dict[str, Any]:
        """The metadata the feature cache of ``split`` must match."""
        return feature_cache_meta(self.detector_sha256(), self.cached_levels, self._cache_meta(split))

    def feature_cache_path(self, split: str) -> Path:
        """The feature cache directory of ``split`` for this detector, the levels, resolution and sequence cache."""
        height, width = self.resolution
        fingerprint = self._cache_meta(split)["fingerprint"]
        name = (f"fpn_features_{split}_{height}x{width}_{''.join(self.cached_levels)}_{self.detector_sha256()[:12]}_"
                f"{fingerprint[:12]}")
        return self.cache_dir / name

    def prepare_data(self) -> None:
        """Build the sequence caches, then, when fitting, extract the train split's features unless they are
        complete (rank 0).

        Only training reads cached features (validation runs the detector on the whole pyramid), so val is never
        extracted (at Cityscapes' size that saves 72 GiB), and a ``Trainer.validate`` or ``test`` run extracts
        nothing. A cache over ``max_cache_gib`` is refused before anything is written.
        """
        if self.trainer is not None and self.trainer.state.fn != TrainerFn.FITTING:
            super().prepare_data()
            return
        refusal = cache_size_refusal(self.cached_levels, self.resolution, len(self.samples("train")),
                                     len(self.cached_indices), self.max_cache_gib)
        if refusal is not None:
            raise ValueError(refusal)
        super().prepare_data()
        cache_path, meta = self.feature_cache_path("train"), self.feature_meta("train")
        if sharded_cache_complete(cache_path, meta):
            log.info("reusing FPN features %s", cache_path)
            return
        frames = CachedSequences(self.cache_path("train"), self._cache_meta("train"), range(len(self.cached_indices)),
                                 crop_size=None, with_instances=False)
        log.info("extracting %s features of %d train snippets to %s", "/".join(self.cached_levels), len(frames),
                 cache_path)
        extract_features(load_exported_detector(self.detector_weights), frames, cache_path, meta,
                         self.extraction_batch_size, resolve_device(self.extraction_device))

    def _with_features(self, sequences: CachedSequences | FeatureSequences | None,
                       split: str) -> FeatureSequences | None:
        if not isinstance(sequences, CachedSequences):
            return sequences
        try:
            features = FPNFeatures(self.feature_cache_path(split), self.feature_meta(split))
        except CacheError as error:
            hint = "prepare_data() extracts the features; the Trainer calls it before setup"
            raise CacheError(f"{error} ({hint})") from error
        return FeatureSequences(sequences, features)

    def setup(self, stage: str | None = None) -> None:
        """Open the sequence caches (see the parent) and pair the training one with its features."""
        super().setup(stage)
        self.train_set = self._with_features(self.train_set, "train")

    def describe(self) -> dict[str, Any]:
        """The parent's summary plus the detector and levels the features come from."""
        return {**super().describe(), "detector": str(self.detector_weights),
                "detector_sha256": self.detector_sha256()[:12], "cached_levels": list(self.cached_levels)}
