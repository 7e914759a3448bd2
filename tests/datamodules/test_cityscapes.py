from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from damaged_data import delete_sequence_frames
from lightning.pytorch.trainer.states import TrainerFn

from datamodules import cityscapes
from datamodules.cache import CacheError, read_array_cache
from datamodules.cityscapes import (
    LAYOUT,
    CityscapesSequenceDataModule,
    index_sequences,
    snippet_frame_indices,
)
from genforecast.demo_data.cityscapes import write_cityscapes_sequences
from metrics.cityscapes_labels import label_id_to_train_id_table

SIZE = (64, 128)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return write_cityscapes_sequences(tmp_path_factory.mktemp("demo") / "cityscapes",
                                      sequences_per_split={"train": 3, "val": 2}, size=SIZE, seed=1)


@pytest.fixture(scope="module")
def short_term(demo, tmp_path_factory) -> CityscapesSequenceDataModule:
    datamodule = CityscapesSequenceDataModule(str(demo), horizon="short", resolution=SIZE, crop_size=32, batch_size=2,
                                              val_batch_size=2, cache_dir=str(tmp_path_factory.mktemp("cache")))
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _frame_number(name: str) -> int:
    return int(name.split("_")[2])


def test_snippet_frame_indices():
    assert snippet_frame_indices(4, 3, 1) == (7, 10, 13, 16, 19)
    assert snippet_frame_indices(4, 3, 3) == (1, 4, 7, 10, 13, 16, 19)
    assert snippet_frame_indices(2, 1, 1) == (17, 18, 19)
    with pytest.raises(ValueError, match="snippet index -2"):
        snippet_frame_indices(5, 3, 3)


def test_index_sequences(demo):
    samples, missing = index_sequences(demo, "train")
    assert missing == [] and len(samples) == 3
    assert [(sample.sequence, sample.annotated_frame) for sample in samples] == [(0, 19), (1, 119), (2, 19)]
    second = samples[1]
    assert len(second.frame_paths) == 30 and all(path.is_file() for path in second.frame_paths)
    assert second.frame_name(19) == "demoville_000001_000119_leftImg8bit.png"
    assert second.frame_name(0) == "demoville_000001_000100_leftImg8bit.png"
    assert second.label_path.name == "demoville_000001_000119_gtFine_labelIds.png"
    assert second.instance_path.is_file() and second.sequence_label_path(7, "instanceIds").is_file()


def test_root_that_is_not_cityscapes_names_the_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        index_sequences(tmp_path, "train")
    assert str(tmp_path / "leftImg8bit_sequence") in str(error.value) and LAYOUT in str(error.value)
    (tmp_path / "leftImg8bit_sequence" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="gtFine does not exist"):
        CityscapesSequenceDataModule(str(tmp_path), cache_dir=str(tmp_path / "cache")).prepare_data()
    (tmp_path / "gtFine" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no \\*_gtFine_labelIds.png files"):
        index_sequences(tmp_path, "train")
    assert LAYOUT in cityscapes.__doc__


def test_short_term_batches(short_term):
    assert short_term.input_indices == (7, 10, 13, 16) and short_term.target_indices == (19,)
    batch = next(iter(short_term.train_dataloader()))
    assert batch["frames"].shape == (2, 5, 3, 32, 32) and batch["frames"].dtype == torch.uint8
    assert batch["labels"].shape == (2, 32, 32) and batch["labels"].dtype == torch.uint8
    assert batch["instances"].shape == (2, 32, 32) and batch["instances"].dtype == torch.int32
    assert batch["index"].dtype == torch.int64 and "frame_labels" not in batch
    names = short_term.frame_names(int(batch["index"][0]))
    assert [_frame_number(name) - _frame_number(names[-1]) for name in names] == [-12, -9, -6, -3, 0]
    assert short_term.describe()["train_snippets"] == 3


def test_val_batches_hold_the_named_frames_and_labels(short_term, demo):
    batches = list(short_term.val_dataloader())
    assert [len(batch["index"]) for batch in batches] == [2]
    batch = batches[0]
    assert batch["frames"].shape == (2, 5, 3, *SIZE)
    for position, index in enumerate(batch["index"].tolist()):
        names = short_term.frame_names(index, "val")
        sample = short_term.samples("val")[index]
        assert names == [sample.frame_name(snippet_index) for snippet_index in (7, 10, 13, 16, 19)]
        for slot, name in enumerate(names):
            rgb = _read(demo / "leftImg8bit_sequence" / "val" / "demoville" / name)[:, :, ::-1]
            assert (batch["frames"][position, slot].permute(1, 2, 0).numpy() == rgb).all()
        assert (batch["labels"][position].numpy() == label_id_to_train_id_table()[_read(sample.label_path)]).all()
        instance_ids = _read(sample.instance_path).astype(np.int32)
        expected = np.where(instance_ids >= 1000, instance_ids, 0)
        assert (batch["instances"][position].numpy() == expected).all() and expected.max() >= 1000
    assert short_term.test_dataloader().dataset is short_term.val_set


def test_mid_term_shares_the_cache_and_yields_seven_frames(short_term, demo, caplog):
    mid_term = CityscapesSequenceDataModule(str(demo), horizon="mid", resolution=SIZE, crop_size=None, batch_size=3,
                                            cache_dir=str(short_term.cache_dir))
    assert mid_term.cache_path("train") == short_term.cache_path("train")
    with caplog.at_level(logging.INFO, logger="datamodules.cityscapes"):
        mid_term.prepare_data()
    assert "reusing cityscapes cache" in caplog.text and "building" not in caplog.text
    mid_term.setup("fit")
    assert mid_term.input_indices == (1, 4, 7, 10) and mid_term.target_indices == (13, 16, 19)
    batch = next(iter(mid_term.train_dataloader()))
    assert batch["frames"].shape == (3, 7, 3, *SIZE)
    names = mid_term.frame_names(int(batch["index"][0]))
    assert [_frame_number(name) - _frame_number(names[-1]) for name in names] == [-18, -15, -12, -9, -6, -3, 0]


def test_missing_frames_are_listed_and_left_out(demo, tmp_path, caplog):
    root = Path(shutil.copytree(demo, tmp_path / "copy"))
    needed = delete_sequence_frames(root, "val", snippet_indices=(10,), snippets=(0,))
    unneeded = delete_sequence_frames(root, "val", snippet_indices=(25,), snippets=(1,))
    _samples, missing = index_sequences(root, "val")
    assert missing == needed + unneeded
    datamodule = CityscapesSequenceDataModule(str(root), resolution=SIZE, cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="datamodules.cityscapes"):
        datamodule.prepare_data()
    assert datamodule.missing_frames == needed and datamodule.missing_count == 1
    assert needed[0] in caplog.text and "leaving out 1 of 2 snippets" in caplog.text
    datamodule.setup("validate")
    assert len(datamodule.val_set) == 1 and datamodule.samples("val")[0].sequence == 1
    assert datamodule.describe()["excluded_snippets"] == {"train": 0, "val": 1}


def test_cache_of_another_resolution_is_refused_and_rebuilt(short_term, demo, tmp_path):
    small = CityscapesSequenceDataModule(str(demo), resolution=(32, 64), crop_size=16, cache_dir=str(tmp_path))
    small.prepare_data()
    with pytest.raises(CacheError, match="'resolution' is \\[32, 64\\] but \\[64, 128\\] was expected"):
        read_array_cache(small.cache_path("val"), short_term._cache_meta("val"))
    shutil.copy(short_term.cache_path("val"), small.cache_path("val"))
    small.prepare_data()
    arrays, meta = read_array_cache(small.cache_path("val"))
    assert arrays["frames"].shape == (2, 7, 3, 32, 64) and meta["resolution"] == [32, 64]
    small.setup("validate")
    assert next(iter(small.val_dataloader()))["labels"].shape == (2, 32, 64)


def test_crops_are_deterministic_per_batch_and_resume_exactly(short_term):
    dataset = short_term.train_set
    indices = torch.tensor([2, 0])
    first, again = dataset[indices], dataset[indices]
    assert all(torch.equal(first[key], again[key]) for key in first)
    full = CityscapesSequenceDataModule(str(short_term.root), resolution=SIZE, crop_size=None,
                                        cache_dir=str(short_term.cache_dir))
    full.setup("fit")
    whole = full.train_set[indices]
    for position, (top, left) in enumerate(dataset.crop_windows(indices.numpy())):
        window = (slice(top, top + 32), slice(left, left + 32))
        assert torch.equal(first["frames"][position], whole["frames"][position][..., window[0], window[1]])
        assert torch.equal(first["instances"][position], whole["instances"][position][window])
    assert dataset.crop_windows(np.array([0, 2])) != dataset.crop_windows(np.array([2, 0]))

    one_per_batch = CityscapesSequenceDataModule(str(short_term.root), resolution=SIZE, crop_size=32, batch_size=1,
                                                 cache_dir=str(short_term.cache_dir))
    one_per_batch.setup("fit")
    loader = one_per_batch.train_dataloader()
    loader.sampler.set_epoch(1)
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    expected = next(iterator)
    resumed = one_per_batch.train_dataloader()
    resumed.load_state_dict(state)
    batch = next(iter(resumed))
    assert all(torch.equal(batch[key], expected[key]) for key in batch)


def test_all_frame_labels_and_lazy_cache_in_workers(demo, tmp_path):
    datamodule = CityscapesSequenceDataModule(str(demo), horizon="mid", resolution=SIZE, crop_size=None,
                                              load_all_frame_labels=True, cache_dir=str(tmp_path))
    datamodule.prepare_data()
    datamodule.setup("validate")
    batch = datamodule.val_set[torch.tensor([0, 1])]
    assert batch["frame_labels"].shape == (2, 7, *SIZE) and batch["frame_instances"].dtype == torch.int32
    assert torch.equal(batch["frame_labels"][:, -1], batch["labels"])
    assert torch.equal(batch["frame_instances"][:, -1], batch["instances"])
    assert not torch.equal(batch["frame_labels"][:, 0], batch["labels"])
    assert len(pickle.dumps(datamodule.val_set)) < 10_000


def test_without_instances_and_fewer_sequences(demo, tmp_path):
    datamodule = CityscapesSequenceDataModule(str(demo), resolution=SIZE, load_instances=False, max_sequences=1,
                                              cache_dir=str(tmp_path))
    datamodule.prepare_data()
    datamodule.setup("validate")
    assert len(datamodule.val_set) == 1 and "_first1" in datamodule.cache_path("val").name
    assert "instances" not in datamodule.val_set[torch.tensor([0])]
    assert "instances" not in read_array_cache(datamodule.cache_path("val"))[0]


def test_invalid_settings(demo):
    with pytest.raises(ValueError, match="horizon"):
        CityscapesSequenceDataModule(str(demo), horizon="long")
    with pytest.raises(ValueError, match="crop_size"):
        CityscapesSequenceDataModule(str(demo), resolution=(32, 64), crop_size=48)
    with pytest.raises(ValueError, match="snippet index"):
        CityscapesSequenceDataModule(str(demo), num_inputs=6)


def test_predict_split_batches_are_the_val_batches_named_after_their_frames(short_term, demo):
    datamodule = CityscapesSequenceDataModule(str(demo), horizon="short", resolution=SIZE, val_batch_size=2,
                                              cache_dir=str(short_term.cache_dir))
    datamodule.setup("predict")
    batch = next(iter(datamodule.predict_dataloader()))
    val_batch = next(iter(short_term.val_dataloader()))
    for key, value in val_batch.items():
        assert torch.equal(batch[key], value)
    expected = [[name.removesuffix("_leftImg8bit.png") for name in short_term.frame_names(index, "val")]
                for index in val_batch["index"].tolist()]
    assert batch["frame_names"] == expected and batch["name"] == [names[-1] for names in expected]


def test_predict_frames_windows_a_folder_like_the_val_snippets(short_term, demo):
    datamodule = CityscapesSequenceDataModule(str(demo), horizon="short", resolution=SIZE, val_batch_size=4,
                                              predict_frames=str(demo / "leftImg8bit_sequence" / "val"))
    datamodule.setup("predict")
    # short term: frames t-12, t-9, ..., t; every t from frame 12 of each 30-frame snippet on is a sample
    assert len(datamodule.predict_set) == 2 * (30 - 12)
    batches = list(datamodule.predict_dataloader())
    assert set(batches[0]) == {"frames", "index", "name", "frame_names"}
    frames = {name: frames for batch in batches for name, frames in zip(batch["name"], batch["frames"])}
    val_batch = next(iter(short_term.val_dataloader()))
    for index, val_frames in zip(val_batch["index"].tolist(), val_batch["frames"]):
        annotated = short_term.frame_names(index, "val")[-1].removesuffix("_leftImg8bit.png")
        assert torch.equal(frames[annotated], val_frames)


def test_predicting_caches_only_the_predicted_split(demo, tmp_path):
    datamodule = CityscapesSequenceDataModule(str(demo), resolution=SIZE, cache_dir=str(tmp_path / "cache"),
                                              predict_split="train")
    assert datamodule.prepared_splits() == ("train", "val")
    datamodule.trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.PREDICTING))
    assert datamodule.prepared_splits() == ("train",)
    datamodule.predict_frames = tmp_path / "frames"
    datamodule.prepare_data()
    assert datamodule.prepared_splits() == () and not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="predict_split"):
        CityscapesSequenceDataModule(str(demo), predict_split="test")
