from __future__ import annotations

import av
import numpy as np
import pytest

from datamodules.ucf101 import read_class_index, read_ucf101_split
from datamodules.video import motion_score, read_video
from genforecast.demo_data.cli import DATASETS, ensure_demo_dataset
from genforecast.demo_data.ucf101 import (
    fold_test_groups,
    render_video,
    write_ucf101,
    write_video,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_ucf101(tmp_path_factory.mktemp("demo") / "UCF101", classes=3, groups=4, clips_per_group=1, frames=8,
                        size=(60, 80), seed=0)


def _lines(path) -> list[str]:
    return path.read_bytes().decode().split("\r\n")[:-1]


def test_layout_and_list_formats(demo):
    lists = demo / "ucfTrainTestlist"
    assert _lines(lists / "classInd.txt") == ["1 ApplyEyeMakeup", "2 Basketball", "3 HandstandPushups"]
    videos = sorted(path.relative_to(demo / "UCF-101").as_posix() for path in (demo / "UCF-101").rglob("*.avi"))
    assert len(videos) == 3 * 4
    for fold in (1, 2, 3):
        train = _lines(lists / f"trainlist0{fold}.txt")
        test = _lines(lists / f"testlist0{fold}.txt")
        assert all(len(line.split()) == 2 for line in train) and all(len(line.split()) == 1 for line in test)
        assert sorted([line.split()[0] for line in train] + test) == videos
        test_groups = {int(name.split("_g")[1][:2]) for name in test}
        assert test_groups == fold_test_groups(fold, 4) and test_groups and len(test_groups) < 4
    assert "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 1" in _lines(lists / "trainlist01.txt")


def test_handstand_pushups_naming_quirk(demo):
    assert (demo / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi").is_file()
    assert "HandstandPushups/v_HandStandPushups_g01_c01.avi" in _lines(demo / "ucfTrainTestlist" / "testlist01.txt")
    assert read_class_index(demo)[2] == "HandstandPushups"
    test_videos = read_ucf101_split(demo, "test", 1)
    assert {video.label for video in test_videos if "HandStand" in video.name} == {2}


def test_videos_are_mpeg4_at_25_fps(demo):
    with av.open(str(demo / "UCF-101" / "Basketball" / "v_Basketball_g01_c01.avi")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.average_rate, stream.frames) == ("mpeg4", 25, 8)
        assert (stream.width, stream.height, stream.format.name) == (80, 60, "yuv420p")


def test_decoding_gives_back_the_drawn_frames(tmp_path):
    drawn = render_video(np.random.default_rng(3), 10, (60, 80))
    decoded = read_video(write_video(tmp_path / "clip.avi", drawn))
    assert decoded.shape == drawn.shape
    # yuv420p halves the chroma resolution; the codec itself adds little on top of that.
    chroma_subsampled = np.stack([av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
                                  .to_ndarray(format="rgb24") for frame in drawn])
    assert np.abs(decoded.astype(int) - chroma_subsampled).mean() < 3
    assert np.abs(decoded.astype(int) - drawn).mean() < 8


def test_rendering_is_deterministic_and_moves():
    first = render_video(np.random.default_rng([0, 1]), 12, (60, 80))
    assert np.array_equal(first, render_video(np.random.default_rng([0, 1]), 12, (60, 80)))
    assert not np.array_equal(first, render_video(np.random.default_rng([0, 2]), 12, (60, 80)))
    scores = [float(motion_score(first[index:index + 2].transpose(0, 3, 1, 2))) for index in range(11)]
    assert min(scores) > 1.0
    assert first.std() > 20


def test_same_seed_same_set(tmp_path):
    for name in ("a", "b"):
        write_ucf101(tmp_path / name, classes=1, groups=2, clips_per_group=1, frames=4, size=(32, 32), seed=5)
    first = read_video(tmp_path / "a" / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi")
    second = read_video(tmp_path / "b" / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi")
    assert np.array_equal(first, second)


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="groups >= 2"):
        write_ucf101(tmp_path, groups=1)
    with pytest.raises(ValueError, match="even"):
        write_ucf101(tmp_path, size=(61, 80))


def test_registered_in_demo_data_cli(tmp_path):
    assert DATASETS["ucf101"][0] == "UCF101"
    root = ensure_demo_dataset("ucf101", tmp_path)
    assert root == tmp_path / "UCF101"
    assert (root / "UCF-101").is_dir() and (root / "ucfTrainTestlist").is_dir()
    train = read_ucf101_split(root, "train", 1)
    assert len(train) == 3 * 2 * 2 and all(video.path.is_file() for video in train)
    with av.open(str(train[0].path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.frames) == (320, 240, 24)
