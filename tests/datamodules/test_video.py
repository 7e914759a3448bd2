from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from damaged_data import write_truncated_copy

from datamodules import cache as cache_module
from datamodules.cache import MANIFEST_NAME, SHARD_NAME_PATTERN, CacheError, read_array_cache, shard_path
from datamodules.video import (
    ClipCacheSettings,
    CorruptVideoError,
    FullClipDataset,
    MovingPatchDataset,
    VideoEntry,
    VideoTooShortError,
    build_clip_cache,
    clip_window_starts,
    fit_frame,
    motion_score,
    open_clip_cache,
    read_clip_windows,
    read_video,
    sample_moving_patch,
)
from genforecast.demo_data.ucf101 import render_video, write_video

SIZE = (48, 64)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Five 12-frame videos (with what was drawn), one 3-frame video, one truncated and one garbage file."""
    folder = tmp_path_factory.mktemp("videos")
    drawn = {}
    for number in range(5):
        drawn[f"v{number}.avi"] = render_video(np.random.default_rng(number), 12, SIZE)
        write_video(folder / f"v{number}.avi", drawn[f"v{number}.avi"])
    write_video(folder / "short.avi", render_video(np.random.default_rng(9), 3, SIZE))
    write_truncated_copy(folder / "v0.avi", folder / "truncated.avi", keep_fraction=0.8)
    (folder / "garbage.avi").write_bytes(b"RIFF" + bytes(range(256)) * 8)
    return folder, drawn


def _shard_name(index: int) -> str:
    return shard_path(".", index).name


def _entries(folder, names) -> list[VideoEntry]:
    return [VideoEntry(path=folder / name, name=name, label=index % 2) for index, name in enumerate(names)]


def _settings(**changes) -> ClipCacheSettings:
    return ClipCacheSettings(**{"dataset": "test", "split": "train", "fold": 1, "frame_size": SIZE, "clip_length": 5,
                                "frame_step": 1, "clips_per_video": 2, "videos_per_shard": 2} | changes)


def test_read_video_and_windows(clips):
    folder, drawn = clips
    frames = read_video(folder / "v1.avi")
    assert frames.shape == (12, *SIZE, 3) and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - drawn["v1.avi"]).mean() < 8

    windows, starts = read_clip_windows(folder / "v1.avi", clip_length=3, frame_step=2, count=3, frame_size=SIZE)
    assert starts == clip_window_starts(12, 5, 3) == [0, 4, 7]
    assert windows.shape == (3, 3, 3, *SIZE)
    for window, start in zip(windows, starts):
        np.testing.assert_array_equal(window, frames[start:start + 5:2].transpose(0, 3, 1, 2))


def test_window_starts():
    assert clip_window_starts(5, 5, 4) == [0]
    assert clip_window_starts(100, 5, 1) == [0]
    assert clip_window_starts(100, 5, 2) == [0, 95]
    with pytest.raises(ValueError):
        clip_window_starts(4, 5, 1)


def test_fit_frame_crops_to_aspect_and_resizes():
    frame = np.zeros((100, 200, 3), dtype=np.uint8)
    frame[:, 50:150] = 255
    fitted = fit_frame(frame, (24, 32))
    assert fitted.shape == (24, 32, 3)
    # The centre 133 columns are kept: the white band covers about 100/133 of the width.
    assert abs((fitted[..., 0] > 127).mean() - 100 / 133) < 0.05
    assert fit_frame(frame, (100, 200)) is frame


def test_unusable_videos_raise_naming_the_file(clips):
    folder, _ = clips
    with pytest.raises(CorruptVideoError, match="truncated.avi: truncated video"):
        read_clip_windows(folder / "truncated.avi", 5, 1, 1, SIZE)
    with pytest.raises(CorruptVideoError, match="garbage.avi"):
        read_video(folder / "garbage.avi")
    with pytest.raises(VideoTooShortError, match="short.avi: 3 frames"):
        read_clip_windows(folder / "short.avi", 5, 1, 1, SIZE)
    with pytest.raises(FileNotFoundError, match="nowhere.avi"):
        read_video(folder / "nowhere.avi")


def test_motion_score():
    clip = np.zeros((3, 3, 4, 4), dtype=np.uint8)
    assert float(motion_score(clip)) == 0.0
    clip[1] = 10
    assert float(motion_score(clip)) == pytest.approx(10.0)
    clip[:, :, :2] = 255
    assert float(motion_score(clip)) == pytest.approx(5.0)
    assert motion_score(np.stack([clip, clip])).shape == (2,)
    assert float(motion_score(torch.from_numpy(clip))) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        motion_score(clip[:1])


def test_motion_filter_keeps_moving_patches_and_rejects_static_ones():
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (3, 64, 200), dtype=np.uint8)
    clip = np.empty((5, 3, 64, 128), dtype=np.uint8)
    for time in range(5):
        clip[time, :, :, :64] = texture[:, :, :64]
        clip[time, :, :, 64:] = texture[:, :, 100 + 3 * time:164 + 3 * time]
    static_patch = clip[:, :, :16, :16]
    assert float(motion_score(static_patch)) == 0.0
    assert float(motion_score(clip[:, :, :16, 64:80])) > 50

    for seed in range(20):
        patch = sample_moving_patch(clip, 16, 4.0, 30, np.random.default_rng(seed))
        assert patch.left >= 64 - 15 and patch.score >= 4.0
        np.testing.assert_array_equal(patch.frames,
                                      clip[..., patch.top:patch.top + 16, patch.left:patch.left + 16])

    static = np.repeat(clip[:1, :, :, :64], 5, axis=0)
    fallback = sample_moving_patch(static, 16, 4.0, 5, np.random.default_rng(0))
    assert fallback.score == 0.0 and fallback.frames.shape == (5, 3, 16, 16)
    with pytest.raises(ValueError, match="exceeds"):
        sample_moving_patch(static, 65, 4.0, 5, np.random.default_rng(0))


def test_build_and_open_cache(clips, tmp_path):
    folder, _ = clips
    videos = _entries(folder, ["v0.avi", "v1.avi", "v2.avi"])
    manifest = build_clip_cache(videos, tmp_path, _settings())
    assert sorted(path.name for path in tmp_path.iterdir()) == [MANIFEST_NAME, _shard_name(0),
                                                                _shard_name(1)]
    assert manifest["num_clips"] == 6 and manifest["skipped_counts"] == {"missing": 0, "corrupt": 0, "too_short": 0}

    arrays, meta = read_array_cache(shard_path(tmp_path, 1))
    assert arrays["frames"].shape == (2, 5, 3, *SIZE) and arrays["frames"].dtype == np.uint8
    assert arrays["video_index"].tolist() == [2, 2] and arrays["start_frame"].tolist() == [0, 7]
    assert (meta["split"], meta["fold"], meta["frame_size"], meta["clip_length"], meta["frame_step"],
            meta["shard"]) == ("train", 1, list(SIZE), 5, 1, 1)
    assert len(meta["fingerprint"]) == 64

    shards, _ = open_clip_cache(videos, tmp_path, _settings())
    assert len(shards) == 6 and shards.labels.tolist() == [0, 0, 1, 1, 0, 0]
    np.testing.assert_array_equal(shards.clip(5), read_video(folder / "v2.avi")[7:12].transpose(0, 3, 1, 2))
    restored = pickle.loads(pickle.dumps(shards))
    assert len(pickle.dumps(shards)) < 10_000
    np.testing.assert_array_equal(restored.clip(5), shards.clip(5))


def test_temporary_files_never_match_the_shard_pattern(clips, tmp_path):
    assert SHARD_NAME_PATTERN.fullmatch(_shard_name(3))
    assert not SHARD_NAME_PATTERN.fullmatch(f".{_shard_name(3)}.k2j4x.tmp")
    (tmp_path / f".{_shard_name(0)}.abc.tmp").write_bytes(b"half a shard")
    folder, _ = clips
    videos = _entries(folder, ["v0.avi", "v1.avi"])
    build_clip_cache(videos, tmp_path, _settings())
    assert len(open_clip_cache(videos, tmp_path, _settings())[0]) == 4


def test_build_resumes_after_a_kill(clips, tmp_path, monkeypatch):
    folder, _ = clips
    videos = _entries(folder, ["v0.avi", "v1.avi", "v2.avi", "v3.avi", "v4.avi"])
    written = []
    real_write = cache_module.write_array_cache

    def write_then_die(path, arrays, meta):
        if written:
            raise KeyboardInterrupt("killed")
        written.append(path.name)
        return real_write(path, arrays, meta)

    monkeypatch.setattr(cache_module, "write_array_cache", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_clip_cache(videos, tmp_path, _settings())
    assert sorted(path.name for path in tmp_path.iterdir()) == [_shard_name(0)]
    with pytest.raises(CacheError, match="manifest.npz"):
        open_clip_cache(videos, tmp_path, _settings())

    first_shard_mtime = shard_path(tmp_path, 0).stat().st_mtime_ns

    def counting_write(path, arrays, meta):
        written.append(path.name)
        return real_write(path, arrays, meta)

    written.clear()
    monkeypatch.setattr(cache_module, "write_array_cache", counting_write)
    build_clip_cache(videos, tmp_path, _settings())
    assert written == [_shard_name(1), _shard_name(2), MANIFEST_NAME]
    assert shard_path(tmp_path, 0).stat().st_mtime_ns == first_shard_mtime
    assert len(open_clip_cache(videos, tmp_path, _settings())[0]) == 10

    written.clear()
    build_clip_cache(videos, tmp_path, _settings())
    assert written == []


def test_damaged_shard_and_changed_settings(clips, tmp_path, monkeypatch):
    folder, _ = clips
    videos = _entries(folder, ["v0.avi", "v1.avi", "v2.avi"])
    build_clip_cache(videos, tmp_path, _settings())
    shard = shard_path(tmp_path, 1)
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(CacheError, match="shard_00001.npz"):
        open_clip_cache(videos, tmp_path, _settings())
    build_clip_cache(videos, tmp_path, _settings())
    assert len(open_clip_cache(videos, tmp_path, _settings())[0]) == 6

    with pytest.raises(CacheError, match="'clip_length' is 5 but 6 was expected"):
        open_clip_cache(videos, tmp_path, _settings(clip_length=6))
    build_clip_cache(videos, tmp_path, _settings(clip_length=6, videos_per_shard=3))
    shards, _ = open_clip_cache(videos, tmp_path, _settings(clip_length=6, videos_per_shard=3))
    assert shards.clip(0).shape == (6, 3, *SIZE)
    assert sorted(path.name for path in tmp_path.iterdir()) == [MANIFEST_NAME, _shard_name(0)]

    with pytest.raises(CacheError, match="'fingerprint'"):
        open_clip_cache(_entries(folder, ["v0.avi", "v1.avi", "v3.avi"]), tmp_path,
                        _settings(clip_length=6, videos_per_shard=3))


def test_unusable_videos_error_or_skip_with_counts(clips, tmp_path, caplog):
    folder, _ = clips
    videos = _entries(folder, ["v0.avi", "truncated.avi", "short.avi", "missing.avi", "garbage.avi"])
    with pytest.raises(CorruptVideoError, match="truncated.avi"):
        build_clip_cache(videos, tmp_path, _settings())
    with pytest.raises(FileNotFoundError, match="missing.avi"):
        build_clip_cache([videos[0], videos[3]], tmp_path / "other", _settings())

    manifest = build_clip_cache(videos, tmp_path, _settings(), skip_corrupt=True)
    assert manifest["skipped_counts"] == {"missing": 1, "corrupt": 2, "too_short": 1}
    assert [entry[:2] for entry in manifest["skipped"]] == [["truncated.avi", "corrupt"], ["short.avi", "too_short"],
                                                           ["missing.avi", "missing"], ["garbage.avi", "corrupt"]]
    assert "truncated.avi" in caplog.text and "garbage.avi" in caplog.text
    assert len(open_clip_cache(videos, tmp_path, _settings())[0]) == 2

    with pytest.raises(CorruptVideoError, match="a cached shard skipped truncated.avi"):
        build_clip_cache(videos, tmp_path, _settings(), skip_corrupt=False)

    short_only = _entries(folder, ["v0.avi", "short.avi"])
    assert build_clip_cache(short_only, tmp_path / "short", _settings())["skipped_counts"]["too_short"] == 1


def test_threaded_decoding_gives_the_same_cache(clips, tmp_path):
    folder, _ = clips
    videos = _entries(folder, ["v0.avi", "v1.avi", "v2.avi", "v3.avi"])
    build_clip_cache(videos, tmp_path / "serial", _settings())
    build_clip_cache(videos, tmp_path / "threads", _settings(), num_workers=2)
    for index in range(2):
        serial, _ = read_array_cache(shard_path(tmp_path / "serial", index))
        threaded, _ = read_array_cache(shard_path(tmp_path / "threads", index))
        for name in serial:
            np.testing.assert_array_equal(serial[name], threaded[name])


def test_patch_dataset_is_deterministic(clips, tmp_path):
    folder, _ = clips
    videos = _entries(folder, ["v0.avi", "v1.avi", "v2.avi"])
    build_clip_cache(videos, tmp_path, _settings())
    shards, _ = open_clip_cache(videos, tmp_path, _settings())
    dataset = MovingPatchDataset(shards, patch_size=16, min_motion=2.0, patch_tries=10, seed=0)
    batch = dataset[torch.tensor([4, 0, 2])]
    assert batch["frames"].shape == (3, 5, 3, 16, 16) and batch["frames"].dtype == torch.uint8
    assert batch["label"].tolist() == [0, 0, 1]
    again = MovingPatchDataset(shards, patch_size=16, min_motion=2.0, patch_tries=10, seed=0)[torch.tensor([4, 0, 2])]
    assert torch.equal(batch["frames"], again["frames"])
    reordered = dataset[torch.tensor([0, 4, 2])]["frames"]
    other_seed = MovingPatchDataset(shards, patch_size=16, min_motion=2.0, patch_tries=10, seed=1)[
        torch.tensor([4, 0, 2])]["frames"]
    assert not torch.equal(batch["frames"], reordered) and not torch.equal(batch["frames"], other_seed)

    full = FullClipDataset(shards)[torch.tensor([5, 1])]
    assert full["frames"].shape == (2, 5, 3, *SIZE) and full["video"].tolist() == [2, 0]
    np.testing.assert_array_equal(full["frames"][0].numpy(), shards.clip(5))
