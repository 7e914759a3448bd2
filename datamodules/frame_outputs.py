"""Per-frame outputs of frozen networks, cached beside the Cityscapes sequence cache and served with its batches.

Three DataModules add to the batches of :class:`~datamodules.cityscapes.CityscapesSequenceDataModule` what frozen
networks make of every cached frame: the segmenter's class scores (:mod:`datamodules.segmentation_scores`), the
detector's FPN features (:mod:`datamodules.fpn_features`) and the distance-map planes of the frames' objects
(:mod:`datamodules.distance_map_planes`). Running the networks in every training step would dominate it, so
:class:`FrameOutputDataModule`, their common skeleton, extracts the outputs once per split:

* into a sharded cache (:func:`datamodules.cache.write_sharded_cache`: shards written atomically one at a time, then
  a manifest, so an interrupted extraction resumes after its finished shards) named
  ``<cache_dir>/<kind>_<split>_<h>x<w>_<what made it>_<sequence cache fingerprint>``: other networks or frames get
  a directory of their own (old ones are left for the user to delete);
* whose metadata (:meth:`FrameOutputDataModule.output_meta`) names what made the outputs and the sequences they are
  of (split, resolution, frame indices, fingerprint): a cache or shard made otherwise is refused with a
  :class:`~datamodules.cache.CacheError` naming the key and both values, never mixed in;
* served by :class:`FrameOutputSequences`: each batch of the sequence cache gains the outputs of exactly its frames
  and crop windows.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.cache import CacheError, Shard, ShardedArrayCache, sharded_cache_complete, write_sharded_cache
from datamodules.cityscapes import CachedSequences, CityscapesSequenceDataModule

log = logging.getLogger(__name__)

FLOAT16_MAX = float(np.finfo(np.float16).max)
"""Network outputs are clamped to this before they are stored as float16."""
_HASH_CHUNK = 1 << 20

Batch = dict[str, torch.Tensor]
OutputsOf = Callable[[Batch], Mapping[str, np.ndarray]]
"""Computes the outputs (arrays (N, T, ...)) of a batch of whole-frame sequence samples (``frames`` (N, T, 3, h, w))."""
OutputsToBatch = Callable[[Mapping[str, np.ndarray]], Batch]
"""Turns gathered outputs into the batch entries a model reads (a module-level function: it goes to loader workers)."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (the fingerprint of an exported network)."""
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


def frame_output_meta(kind: str, version: int, identity: Mapping[str, Any],
                      sequence_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata an output cache must match: its ``kind`` and ``version``, what made it (``identity``: networks'
    sha256, settings), and the split, resolution, frame indices and fingerprint of the sequence cache it is of
    (``sequence_meta``: :func:`datamodules.cityscapes.sequence_cache_meta`)."""
    return {"kind": kind, "version": version, **identity, "split": sequence_meta["split"],
            "resolution": list(sequence_meta["resolution"]), "frame_indices": list(sequence_meta["frame_indices"]),
            "sequence_fingerprint": sequence_meta["fingerprint"]}


def extract_frame_outputs(outputs_of: OutputsOf, dataset: CachedSequences, cache_path: str | os.PathLike,
                          meta: Mapping[str, Any], shard_size: int, description: str) -> Path:
    """Store ``outputs_of`` every sample of ``dataset`` under ``cache_path`` as a sharded cache; return the path.

    ``dataset`` is the split's :class:`CachedSequences` opened on all cached frames without crops; ``meta`` (see
    :func:`frame_output_meta`) must hold its ``resolution`` and ``frame_indices``. Finished shards of an interrupted
    extraction are kept; a shard or manifest with other metadata raises :class:`CacheError` (never overwritten, never
    mixed).
    """
    if dataset.crop_size is not None:
        raise ValueError(f"{description} are extracted from whole frames; open the dataset with crop_size=None")
    frame_count, resolution = len(meta["frame_indices"]), tuple(meta["resolution"])

    def compute_shard(start: int, stop: int) -> Shard:
        batch = dataset[torch.arange(start, stop)]
        if batch["frames"].shape[1] != frame_count or tuple(batch["frames"].shape[-2:]) != resolution:
            raise ValueError(f"the dataset's frames have shape {tuple(batch['frames'].shape[1:])} but the "
                             f"{description} cache meta says {frame_count} frames at {resolution}")
        return Shard(outputs_of(batch))

    write_sharded_cache(cache_path, meta, len(dataset), shard_size, compute_shard, description)
    return Path(cache_path)


class FrameOutputSequences(Dataset):
    """A :class:`CachedSequences` whose batches also carry the cached outputs of the same frames and crop windows.

    ``outputs`` holds one row per sequence sample, each array (rows, T_cached, ..., h, w); a batch gains
    ``to_batch(gathered)`` of the outputs at the batch's frame positions and crops (see the DataModules for the keys).
    """

    def __init__(self, sequences: CachedSequences, outputs: ShardedArrayCache, to_batch: OutputsToBatch) -> None:
        if len(outputs) != len(sequences):
            raise CacheError(f"{outputs.cache_path} holds the outputs of {len(outputs)} snippets but the sequence "
                             f"cache {sequences.cache_path} has {len(sequences)}")
        self.sequences = sequences
        self.outputs = outputs
        self.to_batch = to_batch

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, indices: torch.Tensor) -> Batch:
        batch = self.sequences[indices]
        sample_indices = batch["index"].numpy()
        crop_size = self.sequences.crop_size
        windows = None if crop_size is None else self.sequences.crop_windows(sample_indices)
        gathered = self.outputs.gather(sample_indices, self.sequences.frame_positions, windows, (crop_size, crop_size))
        return batch | self.to_batch(gathered)


class FrameOutputDataModule(CityscapesSequenceDataModule):
    """:class:`CityscapesSequenceDataModule` batches plus the cached per-frame outputs of frozen networks.

    ``prepare_data`` (rank 0) builds the sequence caches, then the output cache of each of :meth:`output_splits`
    unless a finished one exists (resuming an interrupted one); ``setup`` pairs the :attr:`paired_sets` with their
    split's outputs. A subclass declares:

    * ``output_kind``, ``output_version`` and ``output_shard_size`` (samples per shard);
    * :meth:`output_identity`, what made the outputs (recorded and checked), and :meth:`output_name_parts`, its part
      of the cache's directory name;
    * :meth:`output_extractor`, the function computing a batch's outputs (loading its networks once);
    * ``outputs_to_batch``, how gathered outputs become batch entries.

    Args:
        extraction_device: ``"auto"`` (CUDA when available, else CPU) or a torch device string.
        **kwargs: the arguments of :class:`CityscapesSequenceDataModule`.
    """

    output_kind: ClassVar[str]
    output_version: ClassVar[int]
    output_shard_size: ClassVar[int]
    outputs_to_batch: ClassVar[OutputsToBatch]
    paired_sets: ClassVar[tuple[str, ...]] = ("train_set", "val_set", "predict_set")
    """The datasets ``setup`` pairs with their split's outputs."""

    def __init__(self, root: str, extraction_device: str = "auto", **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.extraction_device = extraction_device
        self._sha256: dict[Path, str] = {}

    def weights_sha256(self, path: str | os.PathLike) -> str:
        """sha256 of an exported network's file (read once): what the cache metadata names it by."""
        path = Path(path)
        if path not in self._sha256:
            self._sha256[path] = file_sha256(path)
        return self._sha256[path]

    def device(self) -> torch.device:
        """The device the networks run on during extraction: ``extraction_device`` (see :func:`resolve_device`)."""
        return resolve_device(self.extraction_device)

    def output_identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def output_name_parts(self) -> list[str]:
        raise NotImplementedError

    def output_extractor(self) -> OutputsOf:
        raise NotImplementedError

    def output_splits(self) -> tuple[str, ...]:
        """The splits ``prepare_data`` extracts: those whose sequences it caches."""
        return self.prepared_splits()

    def output_meta(self, split: str) -> dict[str, Any]:
        """The metadata the output cache of ``split`` must match (:func:`frame_output_meta`)."""
        return frame_output_meta(self.output_kind, self.output_version, self.output_identity(),
                                 self._cache_meta(split))

    def output_cache_path(self, split: str) -> Path:
        """The output cache directory of ``split`` for what made it, the resolution and the sequence cache."""
        height, width = self.resolution
        fingerprint = self._cache_meta(split)["fingerprint"]
        parts = "".join(f"_{part}" for part in self.output_name_parts())
        return self.cache_dir / f"{self.output_kind}_{split}_{height}x{width}{parts}_{fingerprint[:12]}"

    def prepare_data(self) -> None:
        """Build the sequence caches, then each output split's cache unless it is complete (rank 0)."""
        super().prepare_data()
        extractor = None
        for split in self.output_splits():
            cache_path, meta = self.output_cache_path(split), self.output_meta(split)
            if sharded_cache_complete(cache_path, meta):
                log.info("reusing %s %s", self.output_kind, cache_path)
                continue
            extractor = extractor or self.output_extractor()
            sequences = CachedSequences(self.cache_path(split), self._cache_meta(split),
                                        range(len(self.cached_indices)), crop_size=None)
            log.info("extracting %s of %d %s snippets to %s", self.output_kind, len(sequences), split, cache_path)
            extract_frame_outputs(extractor, sequences, cache_path, meta, self.output_shard_size, self.output_kind)

    def _with_outputs(self, sequences: Dataset | None, split: str) -> Dataset | None:
        if not isinstance(sequences, CachedSequences):
            return sequences
        try:
            outputs = ShardedArrayCache(self.output_cache_path(split), self.output_meta(split))
        except CacheError as error:
            raise CacheError(f"{error} (prepare_data() extracts the {self.output_kind}; the Trainer calls it before "
                             "setup)") from error
        return FrameOutputSequences(sequences, outputs, type(self).outputs_to_batch)

    def setup(self, stage: str | None = None) -> None:
        """Open the sequence caches (see the parent) and pair the :attr:`paired_sets` with their split's outputs."""
        super().setup(stage)
        splits = {"train_set": "train", "val_set": "val", "predict_set": self.predict_split}
        for name in self.paired_sets:
            setattr(self, name, self._with_outputs(getattr(self, name), splits[name]))
