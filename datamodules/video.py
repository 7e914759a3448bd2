"""Video decoding, a sharded uint8 clip cache, and motion-filtered patch sampling for next-frame prediction.

Decoding compressed video at training time would dominate the cost of a step, so videos are converted once (like
StyleGAN2-ADA's ``dataset_tool``) into a folder of clip shards that training memory-maps:

* :func:`read_clip_windows` decodes a video with PyAV and returns ``count`` windows of ``clip_length`` frames,
  ``frame_step`` frames apart, at the cache resolution (centre-cropped to its aspect ratio and resized when the
  video has another size). Window starts are evenly spaced over the video (:func:`clip_window_starts`), so one
  window starts at frame 0 and, with several, the last one ends on the last frame.
* :func:`build_clip_cache` writes shard ``k`` with the windows of videos ``k * videos_per_shard`` onwards, each
  atomically through :func:`datamodules.cache.write_array_cache`, then a manifest listing every shard, written
  last. A shard's metadata records the cache settings (split, fold, frame size, clip length, frame step, windows
  per video), its index and a fingerprint of its videos, so a rerun after a kill reuses every complete shard
  whose settings and videos are unchanged and rebuilds only the rest. Temporary files start with a dot and end
  in ``.tmp``: they never match the shard name pattern, so a half-written shard is never read.
* :func:`open_clip_cache` validates the manifest and every shard against the expected settings (a cache made
  with other settings raises :class:`CacheError` naming the differing key) and returns :class:`ClipShards`.
* :class:`MovingPatchDataset` cuts random square patches from cached clips and keeps those that move
  (:func:`motion_score`, :func:`sample_moving_patch`); :class:`FullClipDataset` serves whole cached clips.

Videos that cannot be used are reported by path: a missing file or an undecodable or truncated one (fewer frames
decode than the container declares) makes :func:`build_clip_cache` itself raise :class:`FileNotFoundError` or
:class:`CorruptVideoError` naming the file, or, with ``skip_corrupt=True``, is skipped, counted under ``"missing"``
or ``"corrupt"`` and listed in a logged warning. Videos shorter than one window are always skipped and counted
under ``"too_short"``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import av
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.cache import CacheError, read_array_cache, write_array_cache

log = logging.getLogger(__name__)

VIDEO_CACHE_VERSION = 1
SKIP_REASONS = ("missing", "corrupt", "too_short")
MANIFEST_NAME = "manifest.npz"
SHARD_NAME_PATTERN = re.compile(r"shard_(\d{5})\.npz")
_DECODE_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError)


class CorruptVideoError(ValueError):
    """A video file cannot be decoded, or decodes fewer frames than its container declares (truncated)."""


class VideoTooShortError(ValueError):
    """A video has fewer frames than one clip window spans."""


@dataclass(frozen=True)
class VideoEntry:
    """One source video: its file, the name it is listed under (relative path, used in caches) and class label."""

    path: Path
    name: str
    label: int


def shard_name(index: int) -> str:
    """File name of shard ``index`` (matches :data:`SHARD_NAME_PATTERN`; temporary files never do)."""
    return f"shard_{index:05d}.npz"


def fit_frame(frame: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Centre-crop an (h, w, 3) frame to the aspect ratio of ``frame_size`` = (H, W) and resize it to that size.

    Shrinking uses area averaging (no aliasing), enlarging bilinear interpolation; a frame of the right size is
    returned unchanged.
    """
    height, width = frame.shape[:2]
    target_height, target_width = frame_size
    if (height, width) == (target_height, target_width):
        return frame
    if height * target_width > width * target_height:
        crop_height = round(width * target_height / target_width)
        top = (height - crop_height) // 2
        frame = frame[top:top + crop_height]
    else:
        crop_width = round(height * target_width / target_height)
        left = (width - crop_width) // 2
        frame = frame[:, left:left + crop_width]
    shrinking = frame.shape[0] >= target_height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(frame), (target_width, target_height), interpolation=interpolation)


def _declared_frame_count(path: Path) -> int:
    """Frames the container declares for its first video stream, or its packet count when it declares none."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise CorruptVideoError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        if stream.frames > 0:
            return stream.frames
        return sum(1 for packet in container.demux(stream) if packet.size)


def _decode_frames(path: Path, wanted: Iterable[int], declared: int,
                   frame_size: tuple[int, int] | None) -> dict[int, np.ndarray]:
    """Decode the whole stream, keeping frames at the ``wanted`` indices as (H, W, 3) uint8 RGB arrays."""
    wanted = set(wanted)
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            if decoded in wanted:
                pixels = frame.to_ndarray(format="rgb24")
                kept[decoded] = pixels if frame_size is None else fit_frame(pixels, frame_size)
            decoded += 1
    if decoded < declared:
        raise CorruptVideoError(f"{path}: truncated video, only {decoded} of the {declared} declared frames decode")
    return kept


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")


def read_video(path: str | os.PathLike, frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode every frame of a video into a uint8 array (N, H, W, 3), RGB, optionally fitted to ``frame_size``.

    Raises ``FileNotFoundError`` for a missing file and :class:`CorruptVideoError` (naming the path) for one that
    cannot be decoded or is truncated.
    """
    path = Path(path)
    _require_file(path)
    try:
        declared = _declared_frame_count(path)
        frames = _decode_frames(path, range(declared), declared, frame_size)
    except CorruptVideoError:
        raise
    except _DECODE_ERRORS as error:
        raise CorruptVideoError(f"{path}: cannot decode video: {error}") from error
    return np.stack([frames[index] for index in sorted(frames)])


def clip_window_starts(num_frames: int, span: int, count: int) -> list[int]:
    """Start frames of up to ``count`` windows of ``span`` frames, evenly spaced over ``num_frames`` frames.

    The first window starts at frame 0 and, when ``count > 1``, the last ends on the last frame; a video too short
    to hold ``count`` distinct windows gives fewer. Needs ``num_frames >= span``.
    """
    if num_frames < span:
        raise ValueError(f"{num_frames} frames cannot hold a window of {span} frames")
    return sorted({int(start) for start in np.linspace(0, num_frames - span, count).round()})


def read_clip_windows(path: str | os.PathLike, clip_length: int, frame_step: int, count: int,
                      frame_size: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    """Decode up to ``count`` clip windows of a video: uint8 (n, clip_length, 3, H, W) and their start frames.

    Window ``i`` holds frames ``start_i, start_i + frame_step, ...`` (see :func:`clip_window_starts`). Raises
    ``FileNotFoundError``, :class:`CorruptVideoError` or :class:`VideoTooShortError`, each naming the path.
    """
    path = Path(path)
    _require_file(path)
    span = (clip_length - 1) * frame_step + 1
    try:
        declared = _declared_frame_count(path)
        if declared < span:
            raise VideoTooShortError(f"{path}: {declared} frames, fewer than the {span} one clip spans")
        starts = clip_window_starts(declared, span, count)
        offsets = range(0, span, frame_step)
        frames = _decode_frames(path, {start + offset for start in starts for offset in offsets}, declared,
                                frame_size)
    except (CorruptVideoError, VideoTooShortError):
        raise
    except _DECODE_ERRORS as error:
        raise CorruptVideoError(f"{path}: cannot decode video: {error}") from error
    clips = np.stack([np.stack([frames[start + offset] for offset in offsets]) for start in starts])
    return np.ascontiguousarray(clips.transpose(0, 1, 4, 2, 3)), starts


def motion_score(clips: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mean absolute difference between consecutive frames, on the 0..255 scale: (..., T, C, H, W) -> (...).

    The mean runs over the ``T - 1`` frame pairs, the channels and the pixels. It is the criterion of Mathieu et
    al.'s training code, which keeps only patches that move: a static patch scores little more than its
    compression noise, a textured patch crossed by a moving edge scores tens. ``float(motion_score(clip))`` for one
    clip.
    """
    clips = np.asarray(clips)
    if clips.ndim < 4 or clips.shape[-4] < 2:
        raise ValueError(f"expected clips (..., T, C, H, W) with T >= 2, got shape {clips.shape}")
    differences = np.abs(np.diff(clips.astype(np.int16), axis=-4))
    return differences.mean(axis=(-4, -3, -2, -1))


class MovingPatch(NamedTuple):
    """A patch cut from a clip: frames (T, C, P, P), its top-left corner, and its :func:`motion_score`."""

    frames: np.ndarray
    top: int
    left: int
    score: float


def sample_moving_patch(clip: np.ndarray, patch_size: int, min_motion: float, tries: int,
                        rng: np.random.Generator) -> MovingPatch:
    """Cut a random ``patch_size`` square from ``clip`` (T, C, H, W) that moves by at least ``min_motion``.

    Up to ``tries`` uniformly drawn positions are tested in turn and the first whose :func:`motion_score` is at
    least ``min_motion`` is returned. When none qualifies (a static clip) the most moving of the tried patches
    is returned, so a batch always has its full size; ``score`` then lies below ``min_motion``. All ``tries``
    positions are drawn up front, so ``rng`` advances by the same amount whichever patch is kept.
    """
    height, width = clip.shape[-2:]
    if tries < 1:
        raise ValueError(f"tries must be positive, got {tries}")
    if patch_size > min(height, width):
        raise ValueError(f"patch_size {patch_size} exceeds the {height}x{width} frames")
    tops = rng.integers(0, height - patch_size + 1, size=tries)
    lefts = rng.integers(0, width - patch_size + 1, size=tries)
    best: MovingPatch | None = None
    for top, left in zip(tops.tolist(), lefts.tolist()):
        frames = np.asarray(clip[..., top:top + patch_size, left:left + patch_size])
        candidate = MovingPatch(frames, top, left, float(motion_score(frames)))
        if candidate.score >= min_motion:
            return candidate
        if best is None or candidate.score > best.score:
            best = candidate
    return best


@dataclass(frozen=True)
class ClipCacheSettings:
    """Everything that determines a clip cache's contents besides its videos; recorded in every shard.

    ``dataset``, ``split`` and ``fold`` name the video list (e.g. ``"ucf101"``, ``"train"``, 1); windows hold
    ``clip_length`` frames ``frame_step`` apart at ``frame_size`` = (H, W); each video gives up to
    ``clips_per_video`` windows; a shard holds the windows of ``videos_per_shard`` consecutive videos.
    """

    dataset: str
    split: str
    fold: int
    frame_size: tuple[int, int]
    clip_length: int
    frame_step: int = 1
    clips_per_video: int = 1
    videos_per_shard: int = 64

    def __post_init__(self) -> None:
        if min(self.frame_size) <= 0 or len(self.frame_size) != 2:
            raise ValueError(f"frame_size must be two positive sizes (H, W), got {self.frame_size}")
        if self.clip_length < 1 or self.frame_step < 1 or self.clips_per_video < 1 or self.videos_per_shard < 1:
            raise ValueError(f"clip_length, frame_step, clips_per_video and videos_per_shard must be positive: {self}")

    @property
    def span(self) -> int:
        """Frames of the source video one window covers."""
        return (self.clip_length - 1) * self.frame_step + 1

    def meta(self) -> dict[str, Any]:
        """The settings as cache metadata."""
        return {"kind": "genforecast_video_clips", "version": VIDEO_CACHE_VERSION, "dataset": self.dataset,
                "split": self.split, "fold": self.fold, "frame_size": list(self.frame_size),
                "clip_length": self.clip_length, "frame_step": self.frame_step,
                "clips_per_video": self.clips_per_video, "videos_per_shard": self.videos_per_shard}


def videos_fingerprint(videos: Sequence[VideoEntry]) -> str:
    """Hash of the videos' names, labels, file sizes and modification times: changes when any of them does."""
    digest = hashlib.sha256()
    for video in videos:
        try:
            status = video.path.stat()
            signature = f"{status.st_size}:{status.st_mtime_ns}"
        except OSError:
            signature = "missing"
        digest.update(f"{video.name}|{video.label}|{signature}\n".encode())
    return digest.hexdigest()


def _shard_videos(videos: Sequence[VideoEntry], settings: ClipCacheSettings, index: int) -> Sequence[VideoEntry]:
    return videos[index * settings.videos_per_shard:(index + 1) * settings.videos_per_shard]


def _shard_expected_meta(videos: Sequence[VideoEntry], settings: ClipCacheSettings, index: int) -> dict[str, Any]:
    return settings.meta() | {"shard": index, "first_video": index * settings.videos_per_shard,
                              "fingerprint": videos_fingerprint(_shard_videos(videos, settings, index))}


def _manifest_expected_meta(videos: Sequence[VideoEntry], settings: ClipCacheSettings) -> dict[str, Any]:
    return settings.meta() | {"num_videos": len(videos), "fingerprint": videos_fingerprint(videos)}


@dataclass(frozen=True)
class _DecodeOutcome:
    """A decoded video's windows, or why it was not usable (``reason`` in :data:`SKIP_REASONS`)."""

    clips: np.ndarray | None = None
    starts: tuple[int, ...] = ()
    reason: str | None = None
    message: str = ""


def _decode_for_cache(path: Path, settings: ClipCacheSettings) -> _DecodeOutcome:
    """Decode one video's windows, turning every expected failure into data for the caller to report or count."""
    try:
        clips, starts = read_clip_windows(path, settings.clip_length, settings.frame_step, settings.clips_per_video,
                                          settings.frame_size)
    except FileNotFoundError as error:
        return _DecodeOutcome(reason="missing", message=str(error))
    except VideoTooShortError as error:
        return _DecodeOutcome(reason="too_short", message=str(error))
    except CorruptVideoError as error:
        return _DecodeOutcome(reason="corrupt", message=str(error))
    return _DecodeOutcome(clips=clips, starts=tuple(starts))


def _raise_unusable(reason: str, message: str) -> None:
    if reason == "missing":
        raise FileNotFoundError(f"{message} (pass skip_corrupt=True to skip missing videos)")
    raise CorruptVideoError(f"{message} (pass skip_corrupt=True to skip unreadable videos)")


def _write_shard(path: Path, videos: Sequence[VideoEntry], first_video: int, outcomes: Sequence[_DecodeOutcome],
                 settings: ClipCacheSettings, meta: dict[str, Any]) -> int:
    """Write one shard from its videos' decode outcomes; returns its number of clips."""
    height, width = settings.frame_size
    clips = [outcome.clips for outcome in outcomes if outcome.clips is not None]
    frames = (np.concatenate(clips) if clips
              else np.empty((0, settings.clip_length, 3, height, width), dtype=np.uint8))
    video_index, start_frame, labels = [], [], []
    for offset, (video, outcome) in enumerate(zip(videos, outcomes)):
        video_index += [first_video + offset] * len(outcome.starts)
        start_frame += list(outcome.starts)
        labels += [video.label] * len(outcome.starts)
    write_array_cache(path, {"frames": frames, "labels": np.array(labels, dtype=np.int64),
                             "video_index": np.array(video_index, dtype=np.int64),
                             "start_frame": np.array(start_frame, dtype=np.int64)}, meta)
    return len(frames)


def _unusable_in(meta: dict[str, Any], reasons: Sequence[str]) -> list[list[str]]:
    return [entry for entry in meta["skipped"] if entry[1] in reasons]


def build_clip_cache(videos: Sequence[VideoEntry], cache_dir: str | os.PathLike, settings: ClipCacheSettings,
                     skip_corrupt: bool = False, num_workers: int = 0) -> dict[str, Any]:
    """Decode ``videos`` into clip shards under ``cache_dir`` (resumable), write the manifest; return its metadata.

    Shard ``k`` holds ``frames`` uint8 (C, clip_length, 3, H, W), ``labels``, ``video_index`` (into ``videos``)
    and ``start_frame`` int64 (C,) for the windows of videos ``k * videos_per_shard`` onwards. A shard already on
    disk is kept when it opens cleanly and its settings and video fingerprint match; the others are decoded,
    with ``num_workers`` threads (0: in this thread), and written atomically. Shard files beyond the last
    shard are removed, then the manifest (``manifest.npz``: ``clip_counts`` per shard; metadata with the
    settings, the fingerprint of all videos, and the skipped videos as ``[name, reason, message]`` with counts
    per reason) is written last. Unusable videos raise (see the module docstring) unless ``skip_corrupt``; a
    kept shard that was built skipping unreadable videos raises likewise when ``skip_corrupt`` is off.
    """
    if not videos:
        raise ValueError(f"no videos to cache into {cache_dir}")
    cache_dir = Path(cache_dir)
    num_shards = -(-len(videos) // settings.videos_per_shard)
    manifest_expected = _manifest_expected_meta(videos, settings)
    shard_metas: dict[int, dict[str, Any]] = {}
    clip_counts: dict[int, int] = {}
    pending = []
    for index in range(num_shards):
        try:
            arrays, meta = read_array_cache(cache_dir / shard_name(index),
                                            _shard_expected_meta(videos, settings, index), mmap=True)
        except CacheError as error:
            log.info("clip cache %s: shard %d needs building (%s)", cache_dir, index, error)
            pending.append(index)
            continue
        shard_metas[index], clip_counts[index] = meta, len(arrays["frames"])
    if not skip_corrupt:
        for meta in shard_metas.values():
            for name, reason, message in _unusable_in(meta, ("missing", "corrupt")):
                _raise_unusable(reason, f"{message} (a cached shard skipped {name})")
    if pending:
        _build_shards(videos, cache_dir, settings, pending, skip_corrupt, num_workers, shard_metas, clip_counts)
    for stale in cache_dir.iterdir():
        match = SHARD_NAME_PATTERN.fullmatch(stale.name)
        if match and int(match.group(1)) >= num_shards:
            stale.unlink()
    skipped = [entry for index in range(num_shards) for entry in shard_metas[index]["skipped"]]
    counts = [clip_counts[index] for index in range(num_shards)]
    manifest = manifest_expected | {
        "shards": [shard_name(index) for index in range(num_shards)], "num_clips": sum(counts),
        "skipped_counts": {reason: sum(entry[1] == reason for entry in skipped) for reason in SKIP_REASONS},
        "skipped": skipped,
    }
    try:
        stored = read_array_cache(cache_dir / MANIFEST_NAME, manifest)[1]
        if not pending:
            return stored
    except CacheError:
        pass
    write_array_cache(cache_dir / MANIFEST_NAME, {"clip_counts": np.array(counts, dtype=np.int64)}, manifest)
    unreadable = [f"{name} ({reason})" for name, reason, _message in skipped if reason != "too_short"]
    if unreadable:
        log.warning("clip cache %s: skipped %d unreadable videos: %s", cache_dir, len(unreadable),
                    ", ".join(unreadable))
    log.info("clip cache %s: %d clips from %d videos in %d shards (skipped: %s)", cache_dir, sum(counts),
             len(videos), num_shards, manifest["skipped_counts"])
    return manifest


def _build_shards(videos: Sequence[VideoEntry], cache_dir: Path, settings: ClipCacheSettings, pending: list[int],
                  skip_corrupt: bool, num_workers: int, shard_metas: dict[int, dict[str, Any]],
                  clip_counts: dict[int, int]) -> None:
    """Decode and write the ``pending`` shards, filling in their metadata and clip counts.

    ``num_workers`` threads decode in parallel: PyAV (FFmpeg) and OpenCV release the GIL while they work, and
    threads need no pickling, no ``__main__`` guard and no fork, and raise their errors here as usual.
    """
    executor = ThreadPoolExecutor(num_workers, thread_name_prefix="decode") if num_workers > 0 else None
    decode = partial(_decode_for_cache, settings=settings)
    try:
        for index in pending:
            shard_videos = _shard_videos(videos, settings, index)
            paths = [video.path for video in shard_videos]
            outcomes = list(executor.map(decode, paths) if executor else map(decode, paths))
            skipped = []
            for video, outcome in zip(shard_videos, outcomes):
                if outcome.reason is None:
                    continue
                if outcome.reason != "too_short" and not skip_corrupt:
                    _raise_unusable(outcome.reason, outcome.message)
                skipped.append([video.name, outcome.reason, outcome.message])
            meta = _shard_expected_meta(videos, settings, index) | {"skipped": skipped}
            clip_counts[index] = _write_shard(cache_dir / shard_name(index), shard_videos,
                                              index * settings.videos_per_shard, outcomes, settings, meta)
            shard_metas[index] = meta
            log.info("clip cache %s: wrote shard %d (%d clips)", cache_dir, index, clip_counts[index])
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)


class ClipShards:
    """A validated clip cache: clips indexed globally across shards, frames memory-mapped on first use.

    Labels, video indices and start frames (small) are held in memory; the frame arrays are memory maps opened
    lazily in each process, so the object pickles cheaply into DataLoader workers.
    """

    def __init__(self, cache_dir: Path, shard_metas: list[dict[str, Any]], clip_counts: Sequence[int],
                 labels: np.ndarray, video_index: np.ndarray, start_frame: np.ndarray, settings: ClipCacheSettings):
        self.cache_dir = cache_dir
        self.settings = settings
        self.labels, self.video_index, self.start_frame = labels, video_index, start_frame
        self._shard_metas = shard_metas
        self._offsets = np.concatenate([[0], np.cumsum(clip_counts)]).astype(np.int64)
        self._frames: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_frames": None}

    def _frame_arrays(self) -> list[np.ndarray]:
        if self._frames is None:
            self._frames = [read_array_cache(self.cache_dir / shard_name(meta["shard"]), meta, mmap=True)[0]["frames"]
                            for meta in self._shard_metas]
        return self._frames

    def clip(self, index: int) -> np.ndarray:
        """Clip ``index`` as a read-only (T, 3, H, W) uint8 memory map."""
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        shard = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return self._frame_arrays()[shard][index - self._offsets[shard]]


def open_clip_cache(videos: Sequence[VideoEntry], cache_dir: str | os.PathLike,
                    settings: ClipCacheSettings) -> tuple[ClipShards, dict[str, Any]]:
    """Open a cache built by :func:`build_clip_cache` for these videos and settings: ``(shards, manifest meta)``.

    Raises :class:`CacheError` naming the file and the reason when the manifest or a shard is missing, damaged,
    or was made with other settings or other videos.
    """
    cache_dir = Path(cache_dir)
    arrays, manifest = read_array_cache(cache_dir / MANIFEST_NAME, _manifest_expected_meta(videos, settings))
    shard_metas, labels, video_index, start_frame = [], [], [], []
    for index, count in enumerate(arrays["clip_counts"].tolist()):
        expected = _shard_expected_meta(videos, settings, index)
        shard_arrays, _meta = read_array_cache(cache_dir / shard_name(index), expected, mmap=True)
        if len(shard_arrays["frames"]) != count:
            raise CacheError(f"{cache_dir / shard_name(index)}: {len(shard_arrays['frames'])} clips but the manifest "
                             f"records {count}; rebuild the cache")
        shard_metas.append(expected)
        labels.append(np.array(shard_arrays["labels"]))
        video_index.append(np.array(shard_arrays["video_index"]))
        start_frame.append(np.array(shard_arrays["start_frame"]))
    shards = ClipShards(cache_dir, shard_metas, arrays["clip_counts"].tolist(), np.concatenate(labels),
                        np.concatenate(video_index), np.concatenate(start_frame), settings)
    return shards, manifest


class MovingPatchDataset(Dataset):
    """Training batches of moving patches cut from cached clips, one patch per clip index.

    ``dataset[indices]`` (a LongTensor of clip indices) returns ``{"frames": uint8 (B, T, 3, P, P), "label": int64
    (B,)}``, each patch drawn by :func:`sample_moving_patch`. Positions come from a generator seeded with
    ``(seed, *indices)``: a batch is a pure function of the seed and its index tensor, so the same indices give
    the same patches and an exact resume (which replays the sampler's batches) replays the same patches, while
    epochs differ because the sampler groups clips into different batches.
    """

    def __init__(self, shards: ClipShards, patch_size: int, min_motion: float, patch_tries: int, seed: int):
        if patch_tries < 1 or seed < 0:
            raise ValueError(f"patch_tries must be positive and seed non-negative, got {patch_tries} and {seed}")
        self.shards, self.patch_size, self.min_motion, self.patch_tries, self.seed = (
            shards, patch_size, min_motion, patch_tries, seed)

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1).tolist()
        rng = np.random.default_rng([self.seed, *indices])
        patches = [sample_moving_patch(self.shards.clip(index), self.patch_size, self.min_motion, self.patch_tries,
                                       rng).frames for index in indices]
        return {"frames": torch.from_numpy(np.stack(patches)),
                "label": torch.from_numpy(self.shards.labels[indices])}


class FullClipDataset(Dataset):
    """Whole cached clips: ``dataset[indices]`` returns ``{"frames": uint8 (B, T, 3, H, W), "label": int64 (B,),
    "video": int64 (B,)}`` where ``video`` indexes the video list the cache was built from."""

    def __init__(self, shards: ClipShards):
        self.shards = shards

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1).tolist()
        return {"frames": torch.from_numpy(np.stack([self.shards.clip(index) for index in indices])),
                "label": torch.from_numpy(self.shards.labels[indices]),
                "video": torch.from_numpy(self.shards.video_index[indices])}
