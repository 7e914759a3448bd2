from __future__ import annotations

import logging
import shutil
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from damaged_data import write_truncated_copy
from lightning.pytorch.trainer.states import TrainerFn

from datamodules import ucf101
from datamodules.cache import CacheError
from datamodules.ucf101 import (
    UCF101DataModule,
    VideoFolderDataModule,
    evenly_capped,
    hash_fraction,
    list_video_folder,
    read_class_index,
    read_ucf101_split,
)
from datamodules.video import CorruptVideoError, VideoEntry, fit_frame, motion_score, read_video
from genforecast.demo_data.ucf101 import render_video, write_ucf101, write_video

SIZE = (60, 80)
QUIRK = "HandstandPushups/v_HandStandPushups_g01_c01.avi"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """2 classes x 2 groups x 1 clip of 12 frames at 60x80; fold 1 tests group 1 and trains on group 2."""
    return write_ucf101(tmp_path_factory.mktemp("ucf") / "UCF101", classes=2, groups=2, clips_per_group=1,
                        frames=12, size=SIZE, seed=0)


@pytest.fixture
def demo_copy(demo, tmp_path):
    return shutil.copytree(demo, tmp_path / "UCF101")


def _module(root, tmp_path, **overrides) -> UCF101DataModule:
    arguments = {"frame_size": SIZE, "batch_size": 2, "val_batch_size": 2, "eval_stride": 1,
                 "cache_dir": str(tmp_path / "cache")} | overrides
    return UCF101DataModule(str(root), **arguments)


def _ready(module: UCF101DataModule) -> UCF101DataModule:
    module.prepare_data()
    module.setup("fit")
    return module


def test_read_splits(demo):
    assert read_class_index(demo) == ["ApplyEyeMakeup", "HandstandPushups"]
    train = read_ucf101_split(demo, "train", 1)
    test = read_ucf101_split(demo, "test", 1)
    assert [(video.name, video.label) for video in train] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi", 0), ("HandstandPushups/v_HandStandPushups_g02_c01.avi", 1)]
    assert [(video.name, video.label) for video in test] == [("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0),
                                                             (QUIRK, 1)]
    assert all(video.path.is_file() for video in train + test)
    with pytest.raises(ValueError, match="fold must be 1, 2 or 3"):
        read_ucf101_split(demo, "train", 4)


def test_handstand_pushups_resolves_with_either_spelling(demo_copy):
    lists = demo_copy / "ucfTrainTestlist"
    (lists / "testlist02.txt").write_text("HandStandPushups/v_HandStandPushups_g01_c01.avi\n"
                                          "handstandpushups/v_handstandpushups_g01_c01.avi\n"
                                          "HandstandPushups/v_HandstandPushups_g01_c01.avi\n")
    (lists / "trainlist02.txt").write_text("HandstandPushups/v_HandstandPushups_g02_c01.avi 2\n")
    expected = demo_copy / "UCF-101" / QUIRK
    assert [(video.path, video.label) for video in read_ucf101_split(demo_copy, "test", 2)] == [(expected, 1)] * 3
    assert read_ucf101_split(demo_copy, "train", 2)[0].path == expected.with_name("v_HandStandPushups_g02_c01.avi")

    (demo_copy / "UCF-101" / "HandstandPushups").rename(demo_copy / "UCF-101" / "HandStandPushups")
    resolved = read_ucf101_split(demo_copy, "test", 1)[1]
    assert resolved.path == demo_copy / "UCF-101" / "HandStandPushups" / "v_HandStandPushups_g01_c01.avi"
    assert resolved.path.is_file() and resolved.name == QUIRK and resolved.label == 1


def test_missing_files_name_the_path_and_layout(demo_copy, tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        read_ucf101_split(tmp_path / "nowhere", "train", 1)
    assert str(tmp_path / "nowhere") in str(error.value) and "ucfTrainTestlist/classInd.txt" in str(error.value)
    assert ucf101.UCF101_LAYOUT in ucf101.__doc__

    (demo_copy / "ucfTrainTestlist" / "testlist01.txt").unlink()
    with pytest.raises(FileNotFoundError, match="testlist01.txt not found at .*testlist01.txt"):
        read_ucf101_split(demo_copy, "test", 1)
    shutil.rmtree(demo_copy / "UCF-101")
    with pytest.raises(FileNotFoundError, match=f"UCF-101 not found at {demo_copy / 'UCF-101'}"):
        _module(demo_copy, tmp_path).prepare_data()


def test_batches(demo, tmp_path):
    module = _ready(_module(demo, tmp_path))
    assert module.describe() | {"root": None} == module.describe() | {
        "root": None, "train_videos": 2, "train_clips": 4, "eval_videos": 2, "eval_clips": 2,
        "skipped": {"missing": 0, "corrupt": 0, "too_short": 0}, "num_classes": 2}
    batches = list(module.train_dataloader())
    assert len(batches) == 2
    frames = torch.cat([batch["frames"] for batch in batches])
    assert frames.shape == (4, 5, 3, 32, 32) and frames.dtype == torch.uint8
    assert sorted(torch.cat([batch["label"] for batch in batches]).tolist()) == [0, 0, 1, 1]
    assert (motion_score(frames.numpy()) >= ucf101.DEFAULT_MIN_MOTION).all()

    evaluation = next(iter(module.val_dataloader()))
    assert evaluation["frames"].shape == (2, 6, 3, *SIZE) and evaluation["frames"].dtype == torch.uint8
    assert evaluation["video"].tolist() == [0, 1] and evaluation["label"].tolist() == [0, 1]
    first_frames = read_video(module.eval_videos[1].path)[:6].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(evaluation["frames"][1].numpy(), first_frames)
    assert torch.equal(next(iter(module.test_dataloader()))["frames"], evaluation["frames"])


def test_training_batches_are_deterministic_and_resume_exactly(demo, tmp_path):
    module = _ready(_module(demo, tmp_path))
    epoch = [batch["frames"] for batch in module.train_dataloader()]
    again = _ready(_module(demo, tmp_path))
    assert all(torch.equal(first, second["frames"]) for first, second in zip(epoch, again.train_dataloader()))

    loader = _ready(_module(demo, tmp_path)).train_dataloader()
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    resumed = _ready(_module(demo, tmp_path)).train_dataloader()
    resumed.load_state_dict(state)
    assert torch.equal(next(iter(resumed))["frames"], epoch[1])

    loader.sampler.set_epoch(1)
    assert not torch.equal(torch.cat([batch["frames"] for batch in loader]), torch.cat(epoch))


def test_eval_protocol_takes_every_tenth_test_video(tmp_path):
    root = tmp_path / "ucf"
    names = [f"ApplyEyeMakeup/v_ApplyEyeMakeup_g{1 + number // 5:02d}_c{1 + number % 5:02d}.avi"
             for number in range(27)]
    for number, name in enumerate(names):
        write_video(root / "UCF-101" / name, render_video(np.random.default_rng(number), 8, (32, 48)))
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n")
    (lists / "trainlist01.txt").write_text("".join(f"{name} 1\n" for name in names[25:]))
    (lists / "testlist01.txt").write_text("".join(f"{name}\n" for name in names[:25]))

    module = _ready(UCF101DataModule(str(root), frame_size=(32, 48), patch_size=16, batch_size=2, val_batch_size=8,
                                     cache_dir=str(tmp_path / "cache")))
    assert [video.name for video in module.eval_videos] == [names[0], names[10], names[20]]
    batch = next(iter(module.val_dataloader()))
    assert batch["video"].tolist() == [0, 1, 2] and batch["frames"].shape == (3, 6, 3, 32, 48)
    np.testing.assert_array_equal(batch["frames"][2].numpy(),
                                  read_video(root / "UCF-101" / names[20])[:6].transpose(0, 3, 1, 2))


def test_corrupt_video_error_or_skip(demo_copy, tmp_path, caplog):
    video = demo_copy / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g02_c01.avi"
    write_truncated_copy(video.with_name("v_ApplyEyeMakeup_g01_c01.avi"), video, keep_fraction=0.8)
    with pytest.raises(CorruptVideoError, match="v_ApplyEyeMakeup_g02_c01.avi"):
        _module(demo_copy, tmp_path).prepare_data()

    with caplog.at_level(logging.WARNING):
        module = _ready(_module(demo_copy, tmp_path, skip_corrupt=True, batch_size=1))
    assert module.skipped == {"missing": 0, "corrupt": 1, "too_short": 0}
    assert module.skipped_videos == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi (corrupt)"]
    assert "v_ApplyEyeMakeup_g02_c01.avi" in caplog.text
    assert module.describe()["train_clips"] == 2


def test_too_short_videos_are_counted(demo_copy, tmp_path):
    write_video(demo_copy / "UCF-101" / QUIRK, render_video(np.random.default_rng(0), 5, SIZE))
    module = _ready(_module(demo_copy, tmp_path))
    assert module.skipped == {"missing": 0, "corrupt": 0, "too_short": 1}
    assert module.describe()["eval_clips"] == 1 and module.describe()["train_clips"] == 4


def test_cache_made_with_other_settings_is_refused_then_rebuilt(demo, tmp_path):
    _ready(_module(demo, tmp_path))
    module = _module(demo, tmp_path, num_targets=2)
    with pytest.raises(CacheError, match="'clip_length' is 5 but 6 was expected.*prepare_data"):
        module.setup("fit")
    _ready(module)
    assert next(iter(module.train_dataloader()))["frames"].shape == (2, 6, 3, 32, 32)


def test_invalid_arguments(demo, tmp_path):
    with pytest.raises(ValueError, match="patch_size 64 exceeds"):
        _module(demo, tmp_path, patch_size=64)
    with pytest.raises(ValueError, match="fold"):
        _module(demo, tmp_path, fold=0)
    with pytest.raises(RuntimeError, match="setup"):
        _module(demo, tmp_path).train_dataloader()


def test_evenly_capped():
    videos = [VideoEntry(path=None, name=str(number), label=0) for number in range(10)]
    assert [video.name for video in evenly_capped(videos, 3)] == ["0", "4", "9"]
    assert evenly_capped(videos, None) == videos == evenly_capped(videos, 20)


def test_video_folder(tmp_path):
    root = tmp_path / "footage"
    for number, (name, size) in enumerate([("cats/a.avi", SIZE), ("cats/deep/b.MP4", (48, 80)), ("dogs/c.mp4", SIZE),
                                           ("d.avi", SIZE), (".hidden/e.avi", SIZE), ("dogs/f.avi", SIZE)]):
        write_video(root / name, render_video(np.random.default_rng(number), 8, size))
    (root / "notes.txt").write_text("not a video")
    videos, classes = list_video_folder(root, (".avi", ".mp4"))
    assert classes == ["", "cats", "dogs"]
    assert [(video.name, video.label) for video in videos] == [
        ("cats/a.avi", 1), ("cats/deep/b.MP4", 1), ("d.avi", 0), ("dogs/c.mp4", 2), ("dogs/f.avi", 2)]
    assert hash_fraction("cats/a.avi") == hash_fraction("cats/a.avi") and 0 <= hash_fraction("x") < 1

    module = VideoFolderDataModule(str(root), val_fraction=0.4, frame_size=SIZE, batch_size=2, val_batch_size=2,
                                   num_workers=0)
    module.prepare_data()
    module.setup("fit")
    expected_eval = [video.name for video in videos if hash_fraction(video.name) < 0.4]
    assert [video.name for video in module.eval_videos] == expected_eval
    assert len(module.train_videos) + len(module.eval_videos) == 5
    assert next(iter(module.train_dataloader()))["frames"].shape == (2, 5, 3, 32, 32)
    if expected_eval:
        assert next(iter(module.val_dataloader()))["frames"].shape[1:] == (6, 3, *SIZE)
    assert (root / ".genforecast_cache" / "folder_train_fold0" / "manifest.npz").is_file()
    with pytest.raises(FileNotFoundError, match="no videos with extensions .mkv"):
        list_video_folder(root, (".mkv",))


def test_predict_split_caches_and_serves_only_the_predicted_clips(demo, tmp_path):
    module = _module(demo, tmp_path)
    module.trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.PREDICTING))
    module.prepare_data()
    assert module.eval_cache_dir.is_dir() and not module.train_cache_dir.exists()
    module.setup("predict")
    batch = next(iter(module.predict_dataloader()))
    assert batch["frames"].shape == (2, 6, 3, *SIZE) and batch["video"].tolist() == [0, 1]
    assert batch["name"] == ["ApplyEyeMakeup_v_ApplyEyeMakeup_g01_c01_000000",
                             "HandstandPushups_v_HandStandPushups_g01_c01_000000"]
    training = _module(demo, tmp_path, predict_split="train")
    training.prepare_data()
    training.setup("predict")
    names = [name for batch in training.predict_dataloader() for name in batch["name"]]
    assert names == ["ApplyEyeMakeup_v_ApplyEyeMakeup_g02_c01_000000", "ApplyEyeMakeup_v_ApplyEyeMakeup_g02_c01_000007",
                     "HandstandPushups_v_HandStandPushups_g02_c01_000000",
                     "HandstandPushups_v_HandStandPushups_g02_c01_000007"]


def test_predict_frames_are_windows_of_a_folder_fitted_like_video_frames(demo, tmp_path):
    video = read_video(demo / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi")
    (tmp_path / "frames" / "take 1").mkdir(parents=True)
    for number, frame in enumerate(video[:8]):
        cv2.imwrite(str(tmp_path / "frames" / "take 1" / f"{number:04d}.png"), frame[:, :, ::-1])
    module = _module(demo, tmp_path, predict_frames=str(tmp_path / "frames"), frame_size=(30, 40), patch_size=16,
                     val_batch_size=4)
    module.setup("predict")
    (batch,) = list(module.predict_dataloader())
    assert batch["name"] == ["take 1_0005", "take 1_0006", "take 1_0007"]
    assert batch["frame_names"][0] == [f"take 1_{number:04d}" for number in range(6)]
    expected = np.stack([fit_frame(frame, (30, 40)) for frame in video[:6]]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(batch["frames"][0].numpy(), expected)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _module(demo, tmp_path, predict_frames=str(tmp_path / "nowhere")).setup("predict")
