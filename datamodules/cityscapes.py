"""Cityscapes video snippets for semantic/instance segmentation forecasting (Luc et al. 2017, 2018).

Every annotated Cityscapes frame is the 20th frame (index 19) of a 30-frame snippet recorded at 17 Hz. Forecasting
uses every ``frame_step``-th frame before it: short-term forecasting sees frames t-12, t-9, t-6, t-3 and predicts t
(the annotated frame); mid-term forecasting sees t-18 ... t-9 and predicts t-6, t-3 and t autoregressively, of
which only t is scored. Only the annotated frame has ground truth, so batches carry the trainIds and instance ids
of that frame.

Decoding 2048x1024 PNGs is far too slow to do per step, so ``prepare_data`` converts each split once into an array
cache at the training resolution (see :mod:`datamodules.cache`) holding the frames of both horizons (snippet
indices t-18, t-15, ..., t for the default 4 inputs and step 3) and the labels of the annotated frame. The cache
records the split, resolution, frame indices and a fingerprint of the indexed files, so a cache made for another
resolution or another set of files is refused and rebuilt, never mixed in.

Expected layout:

"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import Dataset

from datamodules.cache import CacheError, MappedArrayCache, gather_windows, read_cache_meta, write_array_cache
from datamodules.prediction import FrameWindows, NamedBatches, frame_stem, frame_windows
from datamodules.sampling import ResumableDataLoader, evaluation_loader, training_loader
from metrics.cityscapes_labels import (
    IGNORE_TRAIN_ID,
    INSTANCE_ID_OFFSET,
    NUM_EVALUATED_CLASSES,
    label_id_to_train_id_table,
)

log = logging.getLogger(__name__)

SNIPPET_LENGTH = 30
ANNOTATED_INDEX = 19
"""0-based position of the annotated frame in its snippet: frames are numbered ``annotated - 19 ... annotated + 10``."""
HORIZON_STEPS: dict[str, int] = {"short": 1, "mid": 3}
"""Frames predicted per horizon, each ``frame_step`` snippet frames after the previous one."""

LAYOUT = f"""\
<root>/
  leftImg8bit_sequence/<split>/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png
      {SNIPPET_LENGTH}-frame snippets; the annotated frame is index {ANNOTATED_INDEX}, i.e. a snippet annotated at frame F
      holds frames F-{ANNOTATED_INDEX} ... F+{SNIPPET_LENGTH - ANNOTATED_INDEX - 1}
  gtFine/<split>/<city>/<city>_<seq:06d>_<frame:06d>_gtFine_labelIds.png     labelIds of the annotated frame F
  gtFine/<split>/<city>/<city>_<seq:06d>_<frame:06d>_gtFine_instanceIds.png  labelId*1000+k on instances, else labelId
  gtFine_sequence/<split>/<city>/<city>_<seq:06d>_<frame:06d>_gtFine_{{labelIds,instanceIds}}.png
      demo data only (not part of Cityscapes): labels of every snippet frame, read with load_all_frame_labels
  <split>: train, val (test has no public labels)
"""
__doc__ = (__doc__ or "") + LAYOUT

_LABEL_FILE = re.compile(r"^(?P<city>.+)_(?P<sequence>\d{6})_(?P<frame>\d{6})_gtFine_labelIds\.png$")
PREPROCESSING_VERSION = 1
_PROGRESS_EVERY = 200
_MISSING_SHOWN = 10

_TRAIN_ID_OF_LABEL_ID = label_id_to_train_id_table()
"""labelId -> trainId lookup (255 for ignored and unknown ids) for the label images the cache decodes."""


def frame_file_name(city: str, sequence: int, frame: int) -> str:
    """Cityscapes name of a ``leftImg8bit_sequence`` frame."""
    return f"{city}_{sequence:06d}_{frame:06d}_leftImg8bit.png"


def label_file_name(city: str, sequence: int, frame: int, kind: str) -> str:
    """Cityscapes name of a ``gtFine`` file; ``kind`` is labelIds, instanceIds, color or polygons."""
    extension = "json" if kind == "polygons" else "png"
    return f"{city}_{sequence:06d}_{frame:06d}_gtFine_{kind}.{extension}"


def snippet_frame_indices(num_inputs: int, frame_step: int, horizon_steps: int) -> tuple[int, ...]:
    """Snippet indices of ``num_inputs`` input frames then ``horizon_steps`` future frames ending at the annotated one.

    ``(4, 3, 1)`` gives ``(7, 10, 13, 16, 19)`` (short-term) and ``(4, 3, 3)`` gives ``(1, 4, 7, 10, 13, 16, 19)``
    (mid-term). Raises ``ValueError`` if the first frame would fall before the start of the snippet.
    """
    if num_inputs < 1 or frame_step < 1 or horizon_steps < 1:
        raise ValueError(f"num_inputs, frame_step and horizon steps must be positive, got {num_inputs}, "
                         f"{frame_step} and {horizon_steps}")
    count = num_inputs + horizon_steps
    first = ANNOTATED_INDEX - frame_step * (count - 1)
    if first < 0:
        raise ValueError(f"{num_inputs} inputs every {frame_step} frames with {horizon_steps} future frames need "
                         f"snippet index {first}; snippets start {ANNOTATED_INDEX} frames before the annotated one")
    return tuple(range(first, ANNOTATED_INDEX + 1, frame_step))


@dataclass(frozen=True)
class SequenceSample:
    """One annotated frame and the paths of its snippet.

    ``frame_paths[i]`` is snippet frame ``i`` (``frame_paths[ANNOTATED_INDEX]`` is the annotated frame) and
    ``missing_indices`` lists the snippet indices whose frame file (or, when indexed with frame labels, whose
    ``gtFine_sequence`` labels) does not exist.
    """

    root: Path
    split: str
    city: str
    sequence: int
    annotated_frame: int
    frame_paths: tuple[Path, ...]
    label_path: Path
    instance_path: Path
    missing_indices: tuple[int, ...]

    def frame_number(self, snippet_index: int) -> int:
        """The frame number in file names of snippet frame ``snippet_index``."""
        return self.annotated_frame - ANNOTATED_INDEX + snippet_index

    def frame_name(self, snippet_index: int) -> str:
        """File name of snippet frame ``snippet_index``."""
        return self.frame_paths[snippet_index].name

    def sequence_label_path(self, snippet_index: int, kind: str) -> Path:
        """Demo-only ``gtFine_sequence`` labels (``kind`` labelIds or instanceIds) of snippet frame ``snippet_index``."""
        name = label_file_name(self.city, self.sequence, self.frame_number(snippet_index), kind)
        return self.root / "gtFine_sequence" / self.split / self.city / name


def _require_directory(path: Path, root: Path, split: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: {root} is not a Cityscapes root with a '{split}' split. "
                                f"Expected layout:\n{LAYOUT}")


def index_sequences(root: str | os.PathLike, split: str,
                    with_frame_labels: bool = False) -> tuple[list[SequenceSample], list[str]]:
    """Index every annotated frame of ``split`` and its snippet; returns ``(samples, missing frame file names)``.

    Annotated frames are found by their ``gtFine/<split>/<city>/*_gtFine_labelIds.png`` and sorted by city, sequence
    and frame; their snippet frames are looked up in ``leftImg8bit_sequence/<split>`` (one directory listing per
    city, no per-file checks). With ``with_frame_labels`` the demo-only ``gtFine_sequence`` labels of every frame are
    required too and a frame without them counts as missing (named by its label file). A root that is not
    Cityscapes-shaped raises ``FileNotFoundError`` naming the missing folder and showing :data:`LAYOUT`.
    """
    root = Path(root)
    label_root = root / "gtFine" / split
    frame_root = root / "leftImg8bit_sequence" / split
    sequence_label_root = root / "gtFine_sequence" / split
    required = [root, root / "leftImg8bit_sequence", frame_root, root / "gtFine", label_root]
    if with_frame_labels:
        required += [root / "gtFine_sequence", sequence_label_root]
    for directory in required:
        _require_directory(directory, root, split)
    samples: list[SequenceSample] = []
    missing: list[str] = []
    for city_dir in sorted(path for path in label_root.iterdir() if path.is_dir()):
        city_frames = set(os.listdir(frame_root / city_dir.name)) if (frame_root / city_dir.name).is_dir() else set()
        city_labels: set[str] = set()
        if with_frame_labels and (sequence_label_root / city_dir.name).is_dir():
            city_labels = set(os.listdir(sequence_label_root / city_dir.name))
        for name in sorted(os.listdir(city_dir)):
            match = _LABEL_FILE.match(name)
            if match is None:
                continue
            city, sequence, annotated = match["city"], int(match["sequence"]), int(match["frame"])
            first = annotated - ANNOTATED_INDEX
            if first < 0:
                raise ValueError(f"{city_dir / name}: an annotated frame numbered below {ANNOTATED_INDEX} has no full "
                                 "snippet; is this a Cityscapes gtFine folder?")
            frame_names = [frame_file_name(city, sequence, first + index) for index in range(SNIPPET_LENGTH)]
            missing_indices = []
            for index, frame_name in enumerate(frame_names):
                absent = [frame_name] if frame_name not in city_frames else []
                if with_frame_labels:
                    absent += [label for label in (label_file_name(city, sequence, first + index, kind)
                                                   for kind in ("labelIds", "instanceIds")) if label not in city_labels]
                if absent:
                    missing_indices.append(index)
                    missing.extend(absent)
            samples.append(SequenceSample(
                root=root, split=split, city=city, sequence=sequence, annotated_frame=annotated,
                frame_paths=tuple(frame_root / city_dir.name / frame_name for frame_name in frame_names),
                label_path=city_dir / name,
                instance_path=city_dir / label_file_name(city, sequence, annotated, "instanceIds"),
                missing_indices=tuple(missing_indices)))
    if not samples:
        raise FileNotFoundError(f"no *_gtFine_labelIds.png files under {label_root}: {root} is not a Cityscapes root "
                                f"with a '{split}' split. Expected layout:\n{LAYOUT}")
    return samples, missing


def _file_signature(path: Path, root: Path) -> str:
    stat = path.stat()
    return f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}"


def sequence_cache_meta(samples: Sequence[SequenceSample], split: str, resolution: tuple[int, int],
                        frame_indices: Sequence[int], with_instances: bool, with_frame_labels: bool) -> dict[str, Any]:
    """The metadata a cache must match to be reused: split, resolution, frame indices, contents, index fingerprint.

    The fingerprint hashes the path, size and modification time of every file the cache is made from, so a changed,
    added or removed frame or label file invalidates it.
    """
    digest = hashlib.sha256()
    for sample in samples:
        files = [sample.frame_paths[index] for index in frame_indices] + [sample.label_path]
        if with_instances:
            files.append(sample.instance_path)
        if with_frame_labels:
            kinds = ("labelIds", "instanceIds") if with_instances else ("labelIds",)
            files += [sample.sequence_label_path(index, kind) for index in frame_indices for kind in kinds]
        digest.update(("|".join(_file_signature(path, sample.root) for path in files) + "\n").encode())
    return {"kind": "cityscapes_sequences", "preprocessing": PREPROCESSING_VERSION, "split": split,
            "resolution": list(resolution), "frame_indices": list(frame_indices), "annotated_index": ANNOTATED_INDEX,
            "instances": with_instances, "frame_labels": with_frame_labels, "num_samples": len(samples),
            "fingerprint": digest.hexdigest()}


def _read_png(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"cannot decode {path}")
    return image


def _load_frame(path: Path, resolution: tuple[int, int]) -> np.ndarray:
    """RGB uint8 (3, h, w), area-averaged to ``resolution``."""
    image = _read_png(path, cv2.IMREAD_COLOR)
    height, width = resolution
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return image[:, :, ::-1].transpose(2, 0, 1)


def _load_ids(path: Path, resolution: tuple[int, int]) -> np.ndarray:
    """A single-channel id image (labelIds or instanceIds) resized to ``resolution`` with nearest neighbours."""
    ids = _read_png(path, cv2.IMREAD_UNCHANGED)
    if ids.ndim != 2:
        raise ValueError(f"{path} has {ids.shape[2]} channels; id images have one")
    height, width = resolution
    if ids.shape != (height, width):
        ids = cv2.resize(ids, (width, height), interpolation=cv2.INTER_NEAREST)
    return ids


def _instances_only(instance_ids: np.ndarray) -> np.ndarray:
    """uint16 instance ids with every non-instance pixel (plain labelIds below 1000) set to 0."""
    instance_ids = instance_ids.astype(np.uint16)
    return np.where(instance_ids >= INSTANCE_ID_OFFSET, instance_ids, 0).astype(np.uint16)


def build_sequence_cache(samples: Sequence[SequenceSample], frame_indices: Sequence[int],
                         resolution: tuple[int, int], cache_path: str | os.PathLike, meta: dict[str, Any],
                         with_instances: bool = True, with_frame_labels: bool = False,
                         threads: int | None = None) -> None:
    """Decode the frames and labels of ``samples`` once and write them atomically as a cache at ``resolution``.

    Arrays (N samples, F = ``len(frame_indices)`` frames, (h, w) = ``resolution``):
    ``frames`` uint8 (N, F, 3, h, w) RGB, area-averaged; ``labels`` uint8 (N, h, w) trainIds of the annotated frame
    (nearest neighbour, 255 = ignore); with ``with_instances`` ``instances`` uint16 (N, h, w), the annotated frame's
    instanceIds with non-instance pixels set to 0; with ``with_frame_labels`` ``frame_labels`` uint8 (N, F, h, w)
    (and ``frame_instances`` uint16 (N, F, h, w) with instances) from the demo ``gtFine_sequence`` folder.
    PNG decoding runs in ``threads`` threads (OpenCV releases the GIL), by default one per core up to 8.
    """
    if not samples:
        raise ValueError("no samples to cache")
    count, frame_count = len(samples), len(frame_indices)
    height, width = resolution
    arrays = {"frames": np.empty((count, frame_count, 3, height, width), dtype=np.uint8),
              "labels": np.empty((count, height, width), dtype=np.uint8)}
    if with_instances:
        arrays["instances"] = np.empty((count, height, width), dtype=np.uint16)
    if with_frame_labels:
        arrays["frame_labels"] = np.empty((count, frame_count, height, width), dtype=np.uint8)
        if with_instances:
            arrays["frame_instances"] = np.empty((count, frame_count, height, width), dtype=np.uint16)

    def load(position: int) -> int:
        sample = samples[position]
        for slot, index in enumerate(frame_indices):
            arrays["frames"][position, slot] = _load_frame(sample.frame_paths[index], resolution)
            if with_frame_labels:
                labels = _load_ids(sample.sequence_label_path(index, "labelIds"), resolution)
                arrays["frame_labels"][position, slot] = _TRAIN_ID_OF_LABEL_ID[np.clip(labels, 0, 255)]
                if with_instances:
                    instances = _load_ids(sample.sequence_label_path(index, "instanceIds"), resolution)
                    arrays["frame_instances"][position, slot] = _instances_only(instances)
        labels = _load_ids(sample.label_path, resolution)
        arrays["labels"][position] = _TRAIN_ID_OF_LABEL_ID[np.clip(labels, 0, 255)]
        if with_instances:
            arrays["instances"][position] = _instances_only(_load_ids(sample.instance_path, resolution))
        return position

    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for done, _position in enumerate(pool.map(load, range(count)), start=1):
            if done % _PROGRESS_EVERY == 0:
                log.info("cityscapes cache: %d/%d snippets decoded", done, count)
    write_array_cache(cache_path, arrays, meta)
    log.info("cityscapes cache: wrote %d snippets x %d frames at %dx%d to %s", count, frame_count, height, width,
             cache_path)


class CachedSequences(Dataset):
    """Batches gathered from a sequence cache, a whole index batch at a time as :class:`ResumableDataLoader` expects.

    ``dataset[indices]`` returns ``{"frames": uint8 (B, T, 3, h, w), "labels": uint8 (B, h, w), "instances": int32
    (B, h, w), "index": int64 (B,)}`` where ``T = len(frame_positions)`` (positions into the cached frames) and, when
    the cache has them, ``"frame_labels"`` uint8 (B, T, h, w) and ``"frame_instances"`` int32 (B, T, h, w).

    With ``crop_size`` every sample is cropped to a random ``crop_size`` square (the same window for all its frames
    and labels). The windows of a batch come from a generator seeded with ``(seed, *indices)``, the ordered indices
    of the batch: the sampler draws those from a permutation seeded by ``seed + epoch``, so crops change from epoch to
    epoch, while a batch replayed after a resume gets exactly the same crops, in worker processes too, without the
    dataset having to know the epoch.

    The cache is memory-mapped and reopened in each worker process rather than pickled into it.
    """

    def __init__(self, cache_path: str | os.PathLike, expect_meta: dict[str, Any], frame_positions: Sequence[int],
                 crop_size: int | None = None, seed: int = 0, with_instances: bool = True) -> None:
        self.cache_path = Path(cache_path)
        self.expect_meta = expect_meta
        self.frame_positions = np.asarray(frame_positions, dtype=np.int64)
        self.crop_size = crop_size
        self.seed = seed
        self._store = MappedArrayCache(cache_path, expect_meta)
        arrays = self._cache()
        self.with_instances = with_instances and "instances" in arrays
        self.with_frame_labels = "frame_labels" in arrays
        height, width = arrays["labels"].shape[1:]
        if crop_size is not None and not 0 < crop_size <= min(height, width):
            raise ValueError(f"crop_size {crop_size} does not fit the cached {height}x{width} frames")

    def _cache(self) -> dict[str, np.ndarray]:
        return self._store.arrays()

    def __len__(self) -> int:
        return len(self._cache()["labels"])

    def crop_windows(self, indices: np.ndarray) -> list[tuple[int, int]]:
        """The ``(top, left)`` crop corner of each sample of the batch ``indices`` (all ``(0, 0)`` without crops)."""
        if self.crop_size is None:
            return [(0, 0)] * len(indices)
        height, width = self._cache()["labels"].shape[1:]
        generator = np.random.default_rng([self.seed, *indices.tolist()])
        tops = generator.integers(0, height - self.crop_size + 1, size=len(indices))
        lefts = generator.integers(0, width - self.crop_size + 1, size=len(indices))
        return list(zip(tops.tolist(), lefts.tolist()))

    def __getitem__(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        arrays = self._cache()
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1).numpy()
        windows = None if self.crop_size is None else self.crop_windows(indices)

        def gather(name: str, per_frame: bool) -> np.ndarray:
            return gather_windows([(arrays[name], int(index)) for index in indices],
                                  self.frame_positions if per_frame else None, windows, (self.crop_size,) * 2)

        batch = {"frames": torch.from_numpy(gather("frames", True)), "labels": torch.from_numpy(gather("labels", False))}
        if self.with_instances:
            batch["instances"] = torch.from_numpy(gather("instances", False).astype(np.int32))
        if self.with_frame_labels:
            batch["frame_labels"] = torch.from_numpy(gather("frame_labels", True))
            if self.with_instances:
                batch["frame_instances"] = torch.from_numpy(gather("frame_instances", True).astype(np.int32))
        batch["index"] = torch.from_numpy(indices.copy())
        return batch


class CityscapesSequenceDataModule(L.LightningDataModule):
    """Cityscapes snippets for short- or mid-term segmentation forecasting, served from a per-split cache.

    ``prepare_data`` (rank 0) indexes ``train`` and ``val`` and builds ``<cache_dir>/cityscapes_<split>_<h>x<w>...npz``
    unless a cache with matching metadata exists. Samples whose needed frames are missing are left out with a
    warning listing them (``missing_frames``, ``missing_count``). ``setup`` memory-maps the caches.

    Batches hold ``frames`` uint8 (B, num_inputs + horizon steps, 3, h, w): the inputs then every future frame up to
    the annotated one (short: 4 + 1, mid: 4 + 3; see :attr:`input_indices`, :attr:`target_indices`), ``labels``
    uint8 (B, h, w) trainIds of the annotated frame (255 = ignore), ``instances`` int32 (B, h, w) its instance ids
    (``labelId * 1000 + k``, 0 where none; with ``load_instances``), ``index`` int64 (B,) the sample index (see
    :meth:`frame_names`) and, with ``load_all_frame_labels`` (demo data only), ``frame_labels`` uint8 and
    ``frame_instances`` int32 (B, T, h, w) for every frame. Training batches are random ``crop_size`` crops (see
    :class:`CachedSequences` for their determinism); validation and test batches are whole frames at ``resolution``.
    Cityscapes test labels are not public, so like the forecasting papers the test loader evaluates the val split.

    Prediction (``predict_dataloader``, batches of ``val_batch_size``): the whole frames of ``predict_split``, as
    validation batches, or, with ``predict_frames``, every window of a folder of real frames with the same frame
    spacing (:func:`datamodules.prediction.frame_windows`), area-averaged to ``resolution``: ``{"frames", "index"}``
    only, since such frames have no labels; subclasses add what their models read. Either way batches also carry
    ``name`` and ``frame_names`` (``<city>_<seq>_<frame>`` for Cityscapes names; see :mod:`datamodules.prediction`).
    When predicting, ``prepare_data`` caches the predicted split only, and nothing for ``predict_frames``.
    """

    def __init__(self, root: str, horizon: Literal["short", "mid"] = "short", num_inputs: int = 4,
                 frame_step: int = 3, resolution: tuple[int, int] = (128, 256), crop_size: int | None = 64,
                 batch_size: int = 4, val_batch_size: int = 4, load_instances: bool = True,
                 load_all_frame_labels: bool = False, cache_dir: str | None = None, num_workers: int = 0,
                 seed: int = 0, max_sequences: int | None = None, predict_split: Literal["train", "val"] = "val",
                 predict_frames: str | None = None) -> None:
        super().__init__()
        if horizon not in HORIZON_STEPS:
            raise ValueError(f"horizon must be one of {sorted(HORIZON_STEPS)}, got {horizon!r}")
        resolution = (int(resolution[0]), int(resolution[1]))
        if min(resolution) <= 0 or batch_size <= 0 or val_batch_size <= 0:
            raise ValueError(f"resolution and batch sizes must be positive, got {resolution}, {batch_size} and "
                             f"{val_batch_size}")
        if crop_size is not None and not 0 < crop_size <= min(resolution):
            raise ValueError(f"crop_size must be in 1..{min(resolution)} for resolution {resolution}, got {crop_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if max_sequences is not None and max_sequences <= 0:
            raise ValueError(f"max_sequences must be positive, got {max_sequences}")
        if predict_split not in ("train", "val"):
            raise ValueError(f"predict_split must be 'train' or 'val', got {predict_split!r}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.horizon = horizon
        self.num_inputs = num_inputs
        self.frame_step = frame_step
        self.resolution = resolution
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.load_instances = load_instances
        self.load_all_frame_labels = load_all_frame_labels
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root / ".genforecast_cache"
        self.num_workers = num_workers
        self.seed = seed
        self.max_sequences = max_sequences
        self.predict_split = predict_split
        self.predict_frames = Path(predict_frames) if predict_frames is not None else None
        self.num_classes = NUM_EVALUATED_CLASSES
        self.ignore_index = IGNORE_TRAIN_ID
        # The cache holds the frames of both horizons, so switching horizon reuses it.
        self.cached_indices = snippet_frame_indices(num_inputs, frame_step, max(HORIZON_STEPS.values()))
        # Snippet indices of batch["frames"]: the inputs, then every future frame up to the annotated one.
        self.sequence_indices = snippet_frame_indices(num_inputs, frame_step, HORIZON_STEPS[horizon])
        self.input_indices = self.sequence_indices[:num_inputs]
        self.target_indices = self.sequence_indices[num_inputs:]
        self.missing_frames: list[str] = []
        self.excluded_samples: dict[str, int] = {}
        self.train_set: CachedSequences | None = None
        self.val_set: CachedSequences | None = None
        self.predict_set: CachedSequences | FrameWindows | None = None
        self.predict_frame_names: list[tuple[str, ...]] = []
        self._samples: dict[str, list[SequenceSample]] = {}

    @property
    def missing_count(self) -> int:
        """How many needed frame files were missing from the indexed splits."""
        return len(self.missing_frames)

    def cache_path(self, split: str) -> Path:
        """The cache file of ``split`` for this resolution, frame selection and contents."""
        height, width = self.resolution
        name = f"cityscapes_{split}_{height}x{width}_step{self.frame_step}_frames{len(self.cached_indices)}"
        name += "_instances" if self.load_instances else ""
        name += "_framelabels" if self.load_all_frame_labels else ""
        name += f"_first{self.max_sequences}" if self.max_sequences is not None else ""
        return self.cache_dir / f"{name}.npz"

    def samples(self, split: str) -> list[SequenceSample]:
        """The usable samples of ``split`` in cache order (indexed once; samples with missing frames left out)."""
        if split not in self._samples:
            indexed, _all_missing = index_sequences(self.root, split, with_frame_labels=self.load_all_frame_labels)
            usable, missing = [], []
            for sample in indexed:
                gaps = [index for index in sample.missing_indices if index in self.cached_indices]
                missing.extend(sample.frame_name(index) for index in gaps)
                if not gaps:
                    usable.append(sample)
            if missing:
                shown = ", ".join(missing[:_MISSING_SHOWN])
                more = f" and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
                log.warning("cityscapes %s: %d needed frames are missing (%s%s); leaving out %d of %d snippets",
                            split, len(missing), shown, more, len(indexed) - len(usable), len(indexed))
            if not usable:
                raise FileNotFoundError(f"every snippet of the {split} split under {self.root} misses needed frames")
            self.missing_frames.extend(missing)
            self.excluded_samples[split] = len(indexed) - len(usable)
            self._samples[split] = usable[:self.max_sequences]
        return self._samples[split]

    def _cache_meta(self, split: str) -> dict[str, Any]:
        return sequence_cache_meta(self.samples(split), split, self.resolution, self.cached_indices,
                                   self.load_instances, self.load_all_frame_labels)

    def prepared_splits(self) -> tuple[str, ...]:
        """The splits ``prepare_data`` caches: train and val, but only ``predict_split`` (none for ``predict_frames``)
        when the trainer predicts."""
        if self.trainer is None or self.trainer.state.fn != TrainerFn.PREDICTING:
            return ("train", "val")
        return () if self.predict_frames is not None else (self.predict_split,)

    def prepare_data(self) -> None:
        """Build the caches of :meth:`prepared_splits` unless valid ones for these files and settings exist (rank 0
        only)."""
        for split in self.prepared_splits():
            meta = self._cache_meta(split)
            try:
                read_cache_meta(self.cache_path(split), meta)
                log.info("reusing cityscapes cache %s", self.cache_path(split))
                continue
            except CacheError as error:
                log.info("building cityscapes %s cache (%s)", split, error)
            build_sequence_cache(self.samples(split), self.cached_indices, self.resolution, self.cache_path(split),
                                 meta, with_instances=self.load_instances,
                                 with_frame_labels=self.load_all_frame_labels)

    def _open(self, split: str, crop_size: int | None) -> CachedSequences:
        positions = [self.cached_indices.index(index) for index in self.sequence_indices]
        try:
            return CachedSequences(self.cache_path(split), self._cache_meta(split), positions, crop_size=crop_size,
                                   seed=self.seed, with_instances=self.load_instances)
        except CacheError as error:
            raise CacheError(f"{error} (prepare_data() builds the cache; the Trainer calls it before setup)") from error

    def setup(self, stage: str | None = None) -> None:
        """Open the caches a stage needs: train and val for fitting, the predicted samples for predicting, val
        otherwise."""
        if stage == "predict":
            self._setup_predict()
            return
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._open("train", self.crop_size)
        if self.val_set is None:
            self.val_set = self._open("val", None)
        log.info("cityscapes data: %s", self.describe())

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled, sharded, resumable batches of random crops (incomplete last batch dropped)."""
        if self.train_set is None:
            raise RuntimeError("call prepare_data() and setup('fit') before asking for the train dataloader")
        return training_loader(self.train_set, self.batch_size, self.seed, self.num_workers, items="snippets")

    def val_dataloader(self) -> ResumableDataLoader:
        """Whole val frames in a fixed order, keeping the last partial batch."""
        if self.val_set is None:
            raise RuntimeError("call prepare_data() and setup() before asking for the val dataloader")
        return evaluation_loader(self.val_set, self.val_batch_size, self.num_workers)

    def test_dataloader(self) -> ResumableDataLoader:
        """The val split (Cityscapes test labels are withheld; forecasting results are reported on val)."""
        return self.val_dataloader()

    def _setup_predict(self) -> None:
        if self.predict_set is not None:
            return
        if self.predict_frames is not None:
            first = self.sequence_indices[0]
            windows = frame_windows(self.predict_frames, [index - first for index in self.sequence_indices])
            self.predict_set = FrameWindows(windows, partial(_load_frame, resolution=self.resolution))
            self.predict_frame_names = [window.names for window in windows]
        else:
            self.predict_set = self._open(self.predict_split, None)
            self.predict_frame_names = [tuple(frame_stem(name) for name in self.frame_names(index, self.predict_split))
                                        for index in range(len(self.predict_set))]
        log.info("cityscapes prediction: %d samples from %s", len(self.predict_set),
                 self.predict_frames or f"the {self.predict_split} split")

    def predict_dataloader(self) -> ResumableDataLoader:
        """Every predicted sample once, in order, with its names (see the class docstring)."""
        if self.predict_set is None:
            raise RuntimeError("call setup('predict') before asking for the predict dataloader")
        names = [frame_names[-1] for frame_names in self.predict_frame_names]
        return evaluation_loader(NamedBatches(self.predict_set, names, self.predict_frame_names), self.val_batch_size,
                                 self.num_workers)

    def frame_names(self, index: int, split: str = "train") -> list[str]:
        """File names of the frames of ``batch["frames"][b]`` for the sample ``batch["index"][b] == index``."""
        sample = self.samples(split)[index]
        return [sample.frame_name(snippet_index) for snippet_index in self.sequence_indices]

    def describe(self) -> dict[str, Any]:
        """A short summary for experiment logs."""
        return {"root": str(self.root), "cache_dir": str(self.cache_dir), "horizon": self.horizon, "input_indices": list(self.input_indices),
                "target_indices": list(self.target_indices), "resolution": list(self.resolution),
                "crop_size": self.crop_size, "train_snippets": len(self.train_set) if self.train_set is not None else 0,
                "val_snippets": len(self.val_set) if self.val_set is not None else 0, "missing_frames": self.missing_count,
                "excluded_snippets": dict(self.excluded_samples), "instances": self.load_instances,
                "frame_labels": self.load_all_frame_labels}
