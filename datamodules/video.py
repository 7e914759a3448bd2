"""Video decoding, a sharded uint8 clip cache, and motion-filtered patch sampling for next-frame prediction.

Decoding compressed video at training time would dominate the cost of a step, so videos are converted once (like
StyleGAN2-ADA's ``dataset_tool``) into a folder of clip shards that training memory-maps:

* :func:`read_clip_windows` decodes a video with PyAV and returns ``count`` windows of ``clip_length`` frames,
  ``frame_step`` frames apart, at the cache resolution (centre-cropped to its aspect ratio and resized when the
  video has another size). Window starts are evenly spaced over the video (:func:`clip_window_starts`), so one
  window starts at frame 0 and, with several, the last one ends on the last frame.
* :func:`build_clip_cache` writes the windows of ``videos_per_shard`` videos per shard into a sharded cache
  (:func:`datamodules.cache.write_sharded_cache`): each shard atomically, recording the cache settings (split, fold,
  frame size, clip length, frame step, windows per video) and a fingerprint of its videos, then the manifest, so a
  rerun after a kill reuses every complete shard whose settings and videos are unchanged and rebuilds only the rest.
* :func:`open_clip_cache` validates the manifest and every shard against the expected settings (a cache made
  with other settings raises :class:`datamodules.cache.CacheError` naming the differing key) and returns
  :class:`ClipShards`.
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

from datamodules.cache import Shard, ShardedArrayCache, manifest_meta, write_sharded_cache

log = logging.getLogger(__name__)

VIDEO_CACHE_VERSION = 1
SKIP_REASONS = ("missing", "corrupt", "too_short")
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


def _videos_meta(videos: Sequence[VideoEntry], start: int, stop: int) -> dict[str, Any]:
    """What a shard of videos ``[start, stop)`` records of them: their fingerprint."""
    return {"fingerprint": videos_fingerprint(videos[start:stop])}


def _manifest_expected_meta(videos: Sequence[VideoEntry], settings: ClipCacheSettings) -> dict[str, Any]:
    return manifest_meta(settings.meta(), len(videos), settings.videos_per_shard, partial(_videos_meta, videos))


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


def _clip_arrays(videos: Sequence[VideoEntry], first_video: int, outcomes: Sequence[_DecodeOutcome],
                 settings: ClipCacheSettings) -> dict[str, np.ndarray]:
    """A shard's arrays from its videos' decode outcomes (see :func:`build_clip_cache`)."""
    height, width = settings.frame_size
    clips = [outcome.clips for outcome in outcomes if outcome.clips is not None]
    frames = (np.concatenate(clips) if clips
              else np.empty((0, settings.clip_length, 3, height, width), dtype=np.uint8))
    video_index, start_frame, labels = [], [], []
    for offset, (video, outcome) in enumerate(zip(videos, outcomes)):
        video_index += [first_video + offset] * len(outcome.starts)
        start_frame += list(outcome.starts)
        labels += [video.label] * len(outcome.starts)
    return {"frames": frames, "labels": np.array(labels, dtype=np.int64),
            "video_index": np.array(video_index, dtype=np.int64), "start_frame": np.array(start_frame, dtype=np.int64)}


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's metadata with the clip count and the skipped videos (``[name, reason, message]``) counted."""
    skipped = [entry for notes in manifest["shard_notes"] for entry in notes["skipped"]]
    counts = {reason: sum(entry[1] == reason for entry in skipped) for reason in SKIP_REASONS}
    return manifest | {"num_clips": manifest["num_rows"], "skipped": skipped, "skipped_counts": counts}


def build_clip_cache(videos: Sequence[VideoEntry], cache_dir: str | os.PathLike, settings: ClipCacheSettings,
                     skip_corrupt: bool = False, num_workers: int = 0) -> dict[str, Any]:
    """Decode ``videos`` into clip shards under ``cache_dir`` (resumable); return the manifest's metadata with
    ``num_clips``, ``skipped`` (``[name, reason, message]``) and ``skipped_counts`` per reason.

    A sharded cache (:func:`datamodules.cache.write_sharded_cache`, rebuilding what was made otherwise: the directory
    is reused when the settings change) of ``videos_per_shard`` videos per shard, each shard recording its videos'
    fingerprint: shard ``k`` holds ``frames`` uint8 (C, clip_length, 3, H, W), ``labels``, ``video_index`` (into
    ``videos``) and ``start_frame`` int64 (C,) for the windows of videos ``k * videos_per_shard`` onwards. Videos are
    decoded with ``num_workers`` threads (0: in this thread). Unusable videos raise (see the module docstring)
    unless ``skip_corrupt``; a kept shard that was built skipping unreadable videos raises likewise when
    ``skip_corrupt`` is off.
    """
    if not videos:
        raise ValueError(f"no videos to cache into {cache_dir}")
    executor = ThreadPoolExecutor(num_workers, thread_name_prefix="decode") if num_workers > 0 else None
    decode = partial(_decode_for_cache, settings=settings)

    def decode_shard(start: int, stop: int) -> Shard:
        # PyAV (FFmpeg) and OpenCV release the GIL while they work: threads decode in parallel without pickling.
        paths = [video.path for video in videos[start:stop]]
        outcomes = list(executor.map(decode, paths) if executor else map(decode, paths))
        skipped = []
        for video, outcome in zip(videos[start:stop], outcomes):
            if outcome.reason is None:
                continue
            if outcome.reason != "too_short" and not skip_corrupt:
                _raise_unusable(outcome.reason, outcome.message)
            skipped.append([video.name, outcome.reason, outcome.message])
        return Shard(_clip_arrays(videos[start:stop], start, outcomes, settings), {"skipped": skipped})

    try:
        manifest = _summary(write_sharded_cache(cache_dir, settings.meta(), len(videos), settings.videos_per_shard,
                                                decode_shard, f"clip cache {cache_dir}",
                                                samples_meta=partial(_videos_meta, videos), stale="rebuild"))
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    unreadable = [entry for entry in manifest["skipped"] if entry[1] != "too_short"]
    if not skip_corrupt:
        for name, reason, message in unreadable:
            _raise_unusable(reason, f"{message} (a cached shard skipped {name})")
    if unreadable:
        log.warning("clip cache %s: skipped %d unreadable videos: %s", cache_dir, len(unreadable),
                    ", ".join(f"{name} ({reason})" for name, reason, _message in unreadable))
    log.info("clip cache %s: %d clips from %d videos (skipped: %s)", cache_dir, manifest["num_clips"], len(videos),
             manifest["skipped_counts"])
    return manifest


class ClipShards(ShardedArrayCache):
    """A validated clip cache: clips numbered across shards, frames memory-mapped on first use (anew in each worker
    process); labels, video indices and start frames (small) are held in memory."""

    def __init__(self, cache_dir: str | os.PathLike, videos: Sequence[VideoEntry], settings: ClipCacheSettings):
        super().__init__(cache_dir, settings.meta(), _manifest_expected_meta(videos, settings))
        self.settings = settings
        shards = self.shards()
        self.labels, self.video_index, self.start_frame = (
            np.concatenate([np.array(shard[name]) for shard in shards]) for name in ("labels", "video_index",
                                                                                   "start_frame"))

    def clip(self, index: int) -> np.ndarray:
        """Clip ``index`` as a read-only (T, 3, H, W) uint8 memory map."""
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        arrays, offset = self.locate(index)
        return arrays["frames"][offset]


def open_clip_cache(videos: Sequence[VideoEntry], cache_dir: str | os.PathLike,
                    settings: ClipCacheSettings) -> tuple[ClipShards, dict[str, Any]]:
    """Open a cache built by :func:`build_clip_cache` for these videos and settings: ``(shards, manifest meta)``.

    Raises :class:`CacheError` naming the file and the reason when the manifest or a shard is missing, damaged,
    or was made with other settings or other videos.
    """
    shards = ClipShards(cache_dir, videos, settings)
    return shards, _summary(shards.manifest_meta)


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
