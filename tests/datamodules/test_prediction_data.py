"""datamodules.prediction (test file named apart from tests/genforecast/test_prediction.py: basenames must differ):
frame-folder windows and their names, named batches, loaders that predict every sample once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.prediction import (
    FRAME_FOLDER_LAYOUT,
    FrameWindows,
    NamedBatches,
    frame_stem,
    frame_windows,
    sample_names,
    target_names,
)
from datamodules.sampling import ShardedBatchSampler, evaluation_loader


def _write_frame(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 6, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Cityscapes-named frames 5..12 of one sequence (frame 9 missing) and a plain clip of 5 frames."""
    root = tmp_path / "frames"
    for number in (5, 6, 7, 8, 10, 11, 12):
        _write_frame(root / "city" / f"aachen_000003_{number:06d}_leftImg8bit.png", number)
    for number in range(5):
        _write_frame(root / "clip" / f"f{number:02d}.jpg", 100 + number)
    _write_frame(root / ".hidden" / "f00.png", 0)
    return root


def test_frame_windows_follow_sequences_and_name_every_frame(folder: Path):
    windows = frame_windows(folder, (0, 2, 4))
    names = [window.names for window in windows]
    # Cityscapes names: runs of frame numbers (those through the missing frame 9 are left out); plain: file-name order
    assert names == [
        ("aachen_000003_000006", "aachen_000003_000008", "aachen_000003_000010"),
        ("aachen_000003_000008", "aachen_000003_000010", "aachen_000003_000012"),
        ("clip_f00", "clip_f02", "clip_f04"),
    ]
    batch = FrameWindows(windows, lambda path: np.asarray(Image.open(path)).transpose(2, 0, 1))[torch.tensor([2, 0])]
    assert batch["frames"].shape == (2, 3, 3, 4, 6) and batch["index"].tolist() == [2, 0]
    assert batch["frames"][0, :, 0, 0, 0].tolist() == [100, 102, 104]


def test_frame_stem_names_cityscapes_frames_by_city_sequence_and_frame():
    assert frame_stem("val/aachen_000003_000019_leftImg8bit.png") == "aachen_000003_000019"
    assert frame_stem("drive 1/0001.jpg") == "drive 1_0001"


def test_a_missing_folder_or_one_without_windows_names_the_folder_and_the_layout(folder: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nowhere") as missing:
        frame_windows(tmp_path / "nowhere", (0, 1))
    assert FRAME_FOLDER_LAYOUT in str(missing.value)
    with pytest.raises(FileNotFoundError, match=r"12 frames, none starting a run of frames at offsets \[0, 9\]"):
        frame_windows(folder, (0, 9))


class Indexed(torch.utils.data.Dataset):
    """Three samples, a batch of them at a time: ``{"index": the indices}``."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, indices: torch.Tensor) -> dict:
        return {"index": torch.as_tensor(indices)}


def test_named_batches_carry_the_names_models_read():
    named = NamedBatches(Indexed(), ["a", "b", "c"], [("a0", "a"), ("b0", "b"), ("c0", "c")])[torch.tensor([2, 0])]
    assert named["name"] == ["c", "a"] and named["frame_names"] == [["c0", "c"], ["a0", "a"]]
    assert sample_names(named) == ["c", "a"] and target_names(named, 1) == [["c"], ["a"]]
    unnamed = {"index": torch.arange(2)}
    assert sample_names(unnamed) == ["000000", "000001"]
    assert target_names(unnamed, 2) == [["000000"] * 2, ["000001"] * 2]
    with pytest.raises(KeyError, match="predict_dataloader"):
        sample_names({"frames": torch.zeros(1)})
    with pytest.raises(ValueError, match="2 names for a dataset of 3"):
        NamedBatches(Indexed(), ["a", "b"])


def test_evaluation_loader_yields_every_sample_once_in_order():
    batches = list(evaluation_loader(NamedBatches(Indexed(), ["a", "b", "c"]), batch_size=2))
    assert [batch["index"].tolist() for batch in batches] == [[0, 1], [2]]
    assert [batch["name"] for batch in batches] == [["a", "b"], ["c"]]


def test_evaluation_shares_every_item_once_and_training_shares_equal_batches(monkeypatch):
    batches = {}
    for drop_last in (True, False):
        for rank in (0, 1):
            monkeypatch.setattr("datamodules.sampling._distributed_rank_and_size", lambda rank=rank: (rank, 2))
            sampler = ShardedBatchSampler(9, 2, shuffle=False, drop_last=drop_last)
            batches[drop_last, rank] = [batch.tolist() for batch in sampler]
    # training: 4 full batches, 2 a rank (the 9th item is dropped with the partial batch)
    assert batches[True, 0] == [[0, 1], [4, 5]] and batches[True, 1] == [[2, 3], [6, 7]]
    # evaluation and prediction: contiguous shares of 5 and 4 items, none padded or left out
    assert batches[False, 0] == [[0, 1], [2, 3], [4]] and batches[False, 1] == [[5, 6], [7, 8]]
    with pytest.raises(ValueError, match="1 samples cannot be shared by 2 processes"):
        ShardedBatchSampler(1, 2, shuffle=False, drop_last=False)
