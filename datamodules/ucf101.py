"""UCF101 (and any folder of videos) for multiscale next-frame prediction (Mathieu, Couprie, LeCun, ICLR 2016).

Training follows the paper: random ``patch_size`` x ``patch_size`` patches (32 by default) of ``num_inputs`` +
``num_targets`` consecutive frames (4 + 1), kept only when they move (see below). Evaluation follows its protocol:
every ``eval_stride``-th video (10th) of test list ``fold`` (``testlist01.txt`` for the paper; 0-based lines 0,
10, 20, ...), full frames, ``num_inputs`` input frames and the ``eval_targets`` (2) frames that follow them, which
the model predicts one after the other. The evaluation window is fixed, not chosen by motion, so every method
sees the same frames: it starts at frame 0 of the video (frames 0, s, 2s, ... for a frame step s).

**One-time conversion.** ``prepare_data`` decodes every video once with PyAV into sharded uint8 clip caches
(:mod:`datamodules.video`); training then memory-maps them. Decoding all of UCF101 would not fit: its 13,320 videos
last about 27 hours, ~2.4M frames at 25 fps, and a 240x320 RGB frame is 230,400 bytes, so ~550 GB. The paper
trains on 32x32 patches cut from full-resolution frames, so instead of downscaling, each training video is stored
as ``clips_per_video`` windows (evenly spaced over the video, the first at frame 0, the last ending on the last
frame) of ``num_inputs + num_targets`` full-resolution frames. For fold 1 (9,537 training videos), 5-frame
windows and the default 2 windows per video that is 9,537 x 2 x 5 x 230,400 B = 22 GB (11 GB per window per
video); the evaluation cache is 379 videos x 6 frames x 230,400 B = 0.52 GB. Patch positions are drawn anew for
every batch, so the windows are a sample of each video's time axis only. The conversion is resumable (complete
shards are reused after a kill), decodes on ``num_workers`` threads, and its settings are checked on reading.

**Motion filter.** A patch is kept when :func:`datamodules.video.motion_score`, the mean absolute difference
between consecutive frames over its pixels, channels and frame pairs (0..255 scale), is at least ``min_motion``.
The default 4.0 rejects static background (which scores little more than its compression noise) and keeps
patches crossed by moving edges; raise it for more motion per batch, set it to 0 to keep every patch. At most
``patch_tries`` positions are tried per clip; when none moves enough the most moving one is used.

**Batches** stay uint8 on their way to the device (4x less transfer); the LightningModule maps them to
[-1, 1] with :func:`datamodules.augment.to_unit_range`. Training: ``{"frames": uint8 (B, T, 3, P, P), "label":
int64 (B,)}`` with T = num_inputs + num_targets; validation and test (the same evaluation set, UCF101 having no
validation split): ``{"frames": uint8 (B, num_inputs + eval_targets, 3, H, W), "label": int64 (B,), "video":
int64 (B,)}`` where ``video`` indexes :attr:`eval_videos`. Train patches are a pure function of ``seed`` and the
batch's indices (:class:`datamodules.video.MovingPatchDataset`), so a resumed run replays them exactly.

**Prediction** (``predict_dataloader``, batches of ``val_batch_size``): the whole cached clips of ``predict_split``
(``val``: the evaluation clips, as validation batches; ``train``: the training windows at full resolution), named
``<video path without extension>_<start frame>``; or, with ``predict_frames``, every run of ``num_inputs +
eval_targets`` frames ``frame_step`` apart in a folder of real frames (:func:`datamodules.prediction.frame_windows`),
fitted to ``frame_size`` like the cached frames: ``{"frames": uint8 (B, T, 3, H, W), "index"}``. Batches also carry
``name`` (and ``frame_names`` for frame windows; see :mod:`datamodules.prediction`). When predicting,
``prepare_data`` caches the predicted split only, and nothing for ``predict_frames``.

UCF101 layout:

"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import cv2
import lightning as L
import numpy as np
from lightning.pytorch.trainer.states import TrainerFn

from datamodules.cache import CacheError
from datamodules.prediction import FrameWindows, NamedBatches, frame_stem, frame_windows
from datamodules.sampling import ResumableDataLoader, evaluation_loader, training_loader
from datamodules.video import (
    SKIP_REASONS,
    ClipCacheSettings,
    FullClipDataset,
    MovingPatchDataset,
    VideoEntry,
    build_clip_cache,
    fit_frame,
    open_clip_cache,
)

log = logging.getLogger(__name__)

UCF101_LAYOUT = """\
<root>/
  UCF-101/<Class>/v_<Class>_gXX_cYY.avi   videos, 320x240 at 25 fps (group XX, clip YY)
  ucfTrainTestlist/classInd.txt           "1 ApplyEyeMakeup": 1-based class index and class folder name
  ucfTrainTestlist/trainlist0{1,2,3}.txt  "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1": path, 1-based label
  ucfTrainTestlist/testlist0{1,2,3}.txt   "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": path only
  Paths are matched case-insensitively: the folder HandstandPushups holds v_HandStandPushups_*.avi files.
"""
__doc__ = (__doc__ or "") + UCF101_LAYOUT

DEFAULT_MIN_MOTION = 4.0
"""Default motion threshold of training patches, in mean absolute frame difference on the 0..255 scale."""


class _CaseInsensitivePaths:
    """Resolves relative paths under a folder exactly when they exist, otherwise ignoring case.

    UCF101 spells one class two ways (folder ``HandstandPushups``, files ``v_HandStandPushups_*``), and copies of
    the dataset and its split lists differ in which spelling they use; matching case-insensitively accepts all.
    The folder is listed (two levels) only on the first path that does not match exactly.
    """

    def __init__(self, base: Path):
        self.base = base
        self._index: dict[str, Path] | None = None

    def resolve(self, relative: str) -> Path:
        exact = self.base / relative
        if exact.is_file():
            return exact
        if self._index is None:
            self._index = {str(path.relative_to(self.base)).lower(): path
                           for path in self.base.glob("*/*") if path.is_file()}
        return self._index.get(relative.lower(), exact)


def _ucf101_file(root: Path, relative: str) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"UCF101 root {root} does not exist; expected layout:\n{UCF101_LAYOUT}")
    path = root / relative
    if not path.exists():
        raise FileNotFoundError(f"UCF101 {relative} not found at {path}; expected layout:\n{UCF101_LAYOUT}")
    return path


def read_class_index(root: str | os.PathLike) -> list[str]:
    """Class folder names in ``classInd.txt`` order (label ``i`` is line ``i + 1``)."""
    path = _ucf101_file(Path(root), "ucfTrainTestlist/classInd.txt")
    classes = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2 or tokens[0] != str(len(classes) + 1):
            raise ValueError(f"{path}, line {line_number}: expected '{len(classes) + 1} <ClassName>', got {line!r}")
        classes.append(tokens[1])
    return classes


def read_ucf101_split(root: str | os.PathLike, split: str, fold: int) -> list[VideoEntry]:
    """The videos of ``trainlist0<fold>.txt`` or ``testlist0<fold>.txt`` in file order, with 0-based labels.

    Train labels come from the list (1-based there), test labels from the class folder of each path, matched
    case-insensitively against ``classInd.txt``. Paths are resolved case-insensitively under ``UCF-101``; a
    listed video that does not exist keeps its literal path and is reported when the cache is built.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if fold not in (1, 2, 3):
        raise ValueError(f"fold must be 1, 2 or 3, got {fold}")
    root = Path(root)
    videos_dir = _ucf101_file(root, "UCF-101")
    classes = read_class_index(root)
    class_labels = {name.lower(): label for label, name in enumerate(classes)}
    list_path = _ucf101_file(root, f"ucfTrainTestlist/{split}list0{fold}.txt")
    paths = _CaseInsensitivePaths(videos_dir)
    videos = []
    for line_number, line in enumerate(list_path.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{list_path}, line {line_number}"
        name = tokens[0]
        if split == "train":
            if len(tokens) != 2 or not tokens[1].isdigit() or not 1 <= int(tokens[1]) <= len(classes):
                raise ValueError(f"{where}: expected '<Class>/<video>.avi <label 1..{len(classes)}>', got {line!r}")
            label = int(tokens[1]) - 1
        else:
            folder = name.split("/")[0].lower()
            if folder not in class_labels:
                raise ValueError(f"{where}: class folder of {name!r} is not in classInd.txt")
            label = class_labels[folder]
        videos.append(VideoEntry(path=paths.resolve(name), name=name, label=label))
    return videos


def list_video_folder(root: str | os.PathLike, extensions: Sequence[str]) -> tuple[list[VideoEntry], list[str]]:
    """Every video under ``root`` (any depth; hidden folders skipped), sorted by relative path, and class names.

    A video's label is the index of its top-level folder among the sorted top-level folders holding videos
    (videos directly in ``root`` form the class ``""``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist")
    suffixes = tuple(extension.lower() for extension in extensions)
    names = sorted(str(path.relative_to(root).as_posix()) for path in root.rglob("*")
                   if path.is_file() and path.suffix.lower() in suffixes
                   and not any(part.startswith(".") for part in path.relative_to(root).parts))
    if not names:
        raise FileNotFoundError(f"no videos with extensions {', '.join(suffixes)} under {root}")
    class_of = {name: name.split("/")[0] if "/" in name else "" for name in names}
    classes = sorted(set(class_of.values()))
    return [VideoEntry(path=root / name, name=name, label=classes.index(class_of[name])) for name in names], classes


def hash_fraction(name: str) -> float:
    """A stable pseudo-random number in [0, 1) derived from ``name`` (for deterministic splits)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2.0 ** 64


def load_fitted_frame(path: Path, frame_size: tuple[int, int]) -> np.ndarray:
    """An image file as uint8 RGB (3, H, W), centre-cropped and resized to ``frame_size`` like cached video frames."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode the frame {path}")
    return fit_frame(np.ascontiguousarray(image[:, :, ::-1]), frame_size).transpose(2, 0, 1)


def evenly_capped(videos: list[VideoEntry], max_videos: int | None) -> list[VideoEntry]:
    """At most ``max_videos`` videos spread evenly over the list (so a debug subset still mixes classes)."""
    if max_videos is None or len(videos) <= max_videos:
        return videos
    return [videos[index] for index in sorted({int(i) for i in np.linspace(0, len(videos) - 1, max_videos).round()})]


class _ClipDataModule(L.LightningDataModule):
    """Shared machinery: clip caches, moving-patch training batches, full-frame evaluation batches.

    Subclasses provide the training and evaluation video lists and name their caches.
    """

    dataset_name = ""

    def __init__(self, root: str, num_inputs: int, num_targets: int, eval_targets: int, patch_size: int,
                 frame_step: int, min_motion: float, patch_tries: int, clips_per_video: int,
                 frame_size: tuple[int, int], batch_size: int, val_batch_size: int, cache_dir: str | None,
                 skip_corrupt: bool, num_workers: int, seed: int, max_videos: int | None, videos_per_shard: int,
                 fold: int, predict_split: str = "val", predict_frames: str | None = None) -> None:
        super().__init__()
        if min(num_inputs, num_targets, eval_targets, patch_size, frame_step, patch_tries, clips_per_video,
               batch_size, val_batch_size, videos_per_shard) < 1:
            raise ValueError("num_inputs, num_targets, eval_targets, patch_size, frame_step, patch_tries, "
                             "clips_per_video, batch sizes and videos_per_shard must be positive")
        frame_size = (int(frame_size[0]), int(frame_size[1]))
        if patch_size > min(frame_size):
            raise ValueError(f"patch_size {patch_size} exceeds the frame size {frame_size}")
        if min_motion < 0 or seed < 0 or num_workers < 0 or (max_videos is not None and max_videos < 1):
            raise ValueError("min_motion, seed and num_workers must be non-negative and max_videos positive")
        if predict_split not in ("train", "val"):
            raise ValueError(f"predict_split must be 'train' or 'val', got {predict_split!r}")
        self.root = Path(root)
        self.fold = fold
        self.num_inputs, self.num_targets, self.eval_targets = num_inputs, num_targets, eval_targets
        self.patch_size, self.frame_step, self.frame_size = patch_size, frame_step, frame_size
        self.min_motion, self.patch_tries, self.clips_per_video = min_motion, patch_tries, clips_per_video
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root / ".genforecast_cache"
        self.skip_corrupt, self.num_workers, self.seed = skip_corrupt, num_workers, seed
        self.max_videos, self.videos_per_shard = max_videos, videos_per_shard
        self.predict_split = predict_split
        self.predict_frames = Path(predict_frames) if predict_frames is not None else None
        self.train_set: MovingPatchDataset | None = None
        self.eval_set: FullClipDataset | None = None
        self.predict_set: FullClipDataset | FrameWindows | None = None
        self.predict_names: list[str] = []
        self.predict_frame_names: list[tuple[str, ...]] | None = None
        self.train_videos: list[VideoEntry] = []
        self.eval_videos: list[VideoEntry] = []
        self.skipped: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)
        self.skipped_videos: list[str] = []

    def _video_lists(self) -> tuple[list[VideoEntry], list[VideoEntry]]:
        """The (training, evaluation) videos, already capped by ``max_videos``."""
        raise NotImplementedError

    @property
    def train_cache_dir(self) -> Path:
        return self.cache_dir / f"{self.dataset_name}_train_fold{self.fold}"

    @property
    def eval_cache_dir(self) -> Path:
        return self.cache_dir / f"{self.dataset_name}_eval_fold{self.fold}"

    def _settings(self) -> tuple[ClipCacheSettings, ClipCacheSettings]:
        common = {"dataset": self.dataset_name, "fold": self.fold, "frame_size": self.frame_size,
                  "frame_step": self.frame_step, "videos_per_shard": self.videos_per_shard}
        return (ClipCacheSettings(split="train", clip_length=self.num_inputs + self.num_targets,
                                  clips_per_video=self.clips_per_video, **common),
                ClipCacheSettings(split="eval", clip_length=self.num_inputs + self.eval_targets, clips_per_video=1,
                                  **common))

    def prepared_splits(self) -> tuple[str, ...]:
        """The splits ``prepare_data`` caches: train and val (the evaluation clips), but only ``predict_split`` (none
        for ``predict_frames``) when the trainer predicts."""
        if self.trainer is None or self.trainer.state.fn != TrainerFn.PREDICTING:
            return ("train", "val")
        return () if self.predict_frames is not None else (self.predict_split,)

    def prepare_data(self) -> None:
        """Build (or resume, or reuse) the clip caches of :meth:`prepared_splits` (rank 0 only)."""
        splits = self.prepared_splits()
        if not splits:
            return
        train_videos, eval_videos = self._video_lists()
        train_settings, eval_settings = self._settings()
        if "train" in splits:
            build_clip_cache(train_videos, self.train_cache_dir, train_settings, self.skip_corrupt, self.num_workers)
        if eval_videos and "val" in splits:
            build_clip_cache(eval_videos, self.eval_cache_dir, eval_settings, self.skip_corrupt, self.num_workers)

    def setup(self, stage: str | None = None) -> None:
        """Open and validate the caches built by ``prepare_data`` (once); for predicting, the predicted samples."""
        if stage == "predict":
            self._setup_predict()
            return
        if self.train_set is not None:
            return
        self.train_videos, self.eval_videos = self._video_lists()
        train_settings, eval_settings = self._settings()
        try:
            train_shards, train_manifest = open_clip_cache(self.train_videos, self.train_cache_dir, train_settings)
            manifests = [train_manifest]
            if self.eval_videos:
                eval_shards, eval_manifest = open_clip_cache(self.eval_videos, self.eval_cache_dir, eval_settings)
                manifests.append(eval_manifest)
                self.eval_set = FullClipDataset(eval_shards) if len(eval_shards) else None
        except CacheError as error:
            raise CacheError(f"{error} (prepare_data() builds the cache; the Trainer calls it before setup)") from error
        if not len(train_shards):
            raise ValueError(f"no usable training clips in {self.root} (skipped: {train_manifest['skipped_counts']})")
        self.train_set = MovingPatchDataset(train_shards, self.patch_size, self.min_motion, self.patch_tries,
                                            self.seed)
        self.skipped = {reason: sum(manifest["skipped_counts"][reason] for manifest in manifests)
                        for reason in SKIP_REASONS}
        self.skipped_videos = [f"{name} ({reason})" for manifest in manifests
                               for name, reason, _message in manifest["skipped"]]
        log.info("%s data: %s", self.dataset_name, self.describe())

    def _require_setup(self) -> MovingPatchDataset:
        if self.train_set is None:
            raise RuntimeError("call prepare_data() and setup() before asking for a dataloader")
        return self.train_set

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled, sharded, resumable batches of moving patches, one per cached training clip per epoch."""
        return training_loader(self._require_setup(), self.batch_size, self.seed, self.num_workers, items="clips")

    def val_dataloader(self) -> ResumableDataLoader | list:
        """The evaluation clips in order, last partial batch kept; empty when there are none."""
        self._require_setup()
        if self.eval_set is None:
            return []
        return evaluation_loader(self.eval_set, self.val_batch_size, self.num_workers)

    def test_dataloader(self) -> ResumableDataLoader | list:
        """The same evaluation clips as :meth:`val_dataloader`."""
        return self.val_dataloader()

    def _setup_predict(self) -> None:
        if self.predict_set is not None:
            return
        if self.predict_frames is not None:
            offsets = range(0, (self.num_inputs + self.eval_targets - 1) * self.frame_step + 1, self.frame_step)
            windows = frame_windows(self.predict_frames, offsets)
            self.predict_set = FrameWindows(windows, partial(load_fitted_frame, frame_size=self.frame_size))
            self.predict_frame_names = [window.names for window in windows]
            self.predict_names = [window.names[-1] for window in windows]
        else:
            self.train_videos, self.eval_videos = self._video_lists()
            train_settings, eval_settings = self._settings()
            if self.predict_split == "train":
                videos, cache_dir, settings = self.train_videos, self.train_cache_dir, train_settings
            else:
                videos, cache_dir, settings = self.eval_videos, self.eval_cache_dir, eval_settings
            if not videos:
                raise ValueError(f"the {self.predict_split} split of {self.root} has no videos to predict")
            try:
                shards, _manifest = open_clip_cache(videos, cache_dir, settings)
            except CacheError as error:
                raise CacheError(f"{error} (prepare_data() builds the cache; the Trainer calls it before setup)"
                                 ) from error
            self.predict_set = FullClipDataset(shards)
            self.predict_names = [f"{frame_stem(videos[video].name)}_{start:06d}"
                                  for video, start in zip(shards.video_index.tolist(), shards.start_frame.tolist())]
        log.info("%s prediction: %d samples from %s", self.dataset_name, len(self.predict_set),
                 self.predict_frames or f"the {self.predict_split} split")

    def predict_dataloader(self) -> ResumableDataLoader:
        """Every predicted sample once, in order, with its names (see the module docstring)."""
        if self.predict_set is None:
            raise RuntimeError("call setup('predict') before asking for the predict dataloader")
        return evaluation_loader(NamedBatches(self.predict_set, self.predict_names, self.predict_frame_names),
                                 self.val_batch_size, self.num_workers)

    def describe(self) -> dict[str, Any]:
        """A short summary for experiment logs."""
        return {"root": str(self.root), "dataset": self.dataset_name, "fold": self.fold,
                "frame_size": list(self.frame_size), "num_inputs": self.num_inputs, "num_targets": self.num_targets,
                "eval_targets": self.eval_targets, "patch_size": self.patch_size, "frame_step": self.frame_step,
                "min_motion": self.min_motion, "train_videos": len(self.train_videos),
                "train_clips": len(self.train_set) if self.train_set is not None else 0,
                "eval_videos": len(self.eval_videos),
                "eval_clips": len(self.eval_set) if self.eval_set is not None else 0, "skipped": dict(self.skipped)}


class UCF101DataModule(_ClipDataModule):
    """UCF101 for next-frame prediction: moving training patches, full-frame evaluation (see the module docstring).

    ``fold`` picks ``trainlist0<fold>.txt`` for training and ``testlist0<fold>.txt`` for evaluation (the paper:
    fold 1). ``eval_stride`` keeps every n-th test video, from the first. ``frame_size`` is the cache resolution
    (UCF101's own 240x320 by default; other sizes are centre-cropped and resized). ``max_videos`` caps both lists
    (evenly spread) for debugging. ``num_workers`` sets both the decoding threads and the DataLoader worker processes.
    ``videos_per_shard`` sets the shard size (64 videos x 2 windows x 5 frames = 147 MB at 240x320). After
    ``setup``, :attr:`skipped` counts unusable videos by reason (``missing``, ``corrupt``, ``too_short``) and
    :attr:`skipped_videos` names them.
    """

    dataset_name = "ucf101"

    def __init__(self, root: str, fold: int = 1, num_inputs: int = 4, num_targets: int = 1, eval_targets: int = 2,
                 patch_size: int = 32, frame_step: int = 1, min_motion: float = DEFAULT_MIN_MOTION,
                 clips_per_video: int = 2, eval_stride: int = 10, batch_size: int = 8, val_batch_size: int = 8,
                 cache_dir: str | None = None, skip_corrupt: bool = False, num_workers: int = 0, seed: int = 0,
                 max_videos: int | None = None, frame_size: tuple[int, int] = (240, 320), patch_tries: int = 20,
                 videos_per_shard: int = 64, predict_split: Literal["train", "val"] = "val",
                 predict_frames: str | None = None) -> None:
        if fold not in (1, 2, 3):
            raise ValueError(f"fold must be 1, 2 or 3, got {fold}")
        if eval_stride < 1:
            raise ValueError(f"eval_stride must be positive, got {eval_stride}")
        super().__init__(root=root, num_inputs=num_inputs, num_targets=num_targets, eval_targets=eval_targets,
                         patch_size=patch_size, frame_step=frame_step, min_motion=min_motion,
                         patch_tries=patch_tries, clips_per_video=clips_per_video, frame_size=frame_size,
                         batch_size=batch_size, val_batch_size=val_batch_size, cache_dir=cache_dir,
                         skip_corrupt=skip_corrupt, num_workers=num_workers, seed=seed, max_videos=max_videos,
                         videos_per_shard=videos_per_shard, fold=fold, predict_split=predict_split,
                         predict_frames=predict_frames)
        self.save_hyperparameters()
        self.eval_stride = eval_stride
        self.classes: list[str] = []

    def _video_lists(self) -> tuple[list[VideoEntry], list[VideoEntry]]:
        self.classes = read_class_index(self.root)
        train = read_ucf101_split(self.root, "train", self.fold)
        evaluation = read_ucf101_split(self.root, "test", self.fold)[::self.eval_stride]
        return evenly_capped(train, self.max_videos), evenly_capped(evaluation, self.max_videos)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"eval_stride": self.eval_stride, "num_classes": len(self.classes)}


class VideoFolderDataModule(_ClipDataModule):
    """Any folder tree of videos, batched like :class:`UCF101DataModule`, so the models train on other footage.

    Videos with one of ``extensions`` (case-insensitive) are found at any depth (hidden folders skipped). Each
    goes to evaluation when :func:`hash_fraction` of its relative path is below ``val_fraction``, else to
    training: the split is stable when videos are added or removed. Labels index the top-level folders.
    Evaluation uses the window at frame 0 of every evaluation video, as for UCF101.
    """

    dataset_name = "folder"

    def __init__(self, root: str, extensions: tuple[str, ...] = (".avi", ".mp4"), val_fraction: float = 0.1,
                 num_inputs: int = 4, num_targets: int = 1, eval_targets: int = 2, patch_size: int = 32,
                 frame_step: int = 1, min_motion: float = DEFAULT_MIN_MOTION, clips_per_video: int = 2,
                 batch_size: int = 8, val_batch_size: int = 8, cache_dir: str | None = None,
                 skip_corrupt: bool = False, num_workers: int = 0, seed: int = 0, max_videos: int | None = None,
                 frame_size: tuple[int, int] = (240, 320), patch_tries: int = 20, videos_per_shard: int = 64,
                 predict_split: Literal["train", "val"] = "val", predict_frames: str | None = None) -> None:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        super().__init__(root=root, num_inputs=num_inputs, num_targets=num_targets, eval_targets=eval_targets,
                         patch_size=patch_size, frame_step=frame_step, min_motion=min_motion,
                         patch_tries=patch_tries, clips_per_video=clips_per_video, frame_size=frame_size,
                         batch_size=batch_size, val_batch_size=val_batch_size, cache_dir=cache_dir,
                         skip_corrupt=skip_corrupt, num_workers=num_workers, seed=seed, max_videos=max_videos,
                         videos_per_shard=videos_per_shard, fold=0, predict_split=predict_split,
                         predict_frames=predict_frames)
        self.save_hyperparameters()
        self.extensions = tuple(extensions)
        self.val_fraction = val_fraction
        self.classes: list[str] = []

    def _video_lists(self) -> tuple[list[VideoEntry], list[VideoEntry]]:
        videos, self.classes = list_video_folder(self.root, self.extensions)
        evaluation = [video for video in videos if hash_fraction(video.name) < self.val_fraction]
        train = [video for video in videos if hash_fraction(video.name) >= self.val_fraction]
        return evenly_capped(train, self.max_videos), evenly_capped(evaluation, self.max_videos)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"val_fraction": self.val_fraction, "num_classes": len(self.classes)}
