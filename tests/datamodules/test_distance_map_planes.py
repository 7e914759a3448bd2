"""DistanceMapDataModule: planes aligned with frames and crops, both sources, cache validation, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn

from datamodules.cache import CacheError, ShardedArrayCache
from datamodules.distance_map_planes import DistanceMapDataModule
from representations.distance_map_encoding import encode_frame

SIZE = [64, 128]


def _datamodule(root: Path, tmp_path: Path, **kwargs) -> DistanceMapDataModule:
    options = {"horizon": "mid", "resolution": SIZE, "crop_size": 32, "batch_size": 2, "val_batch_size": 2,
               "cache_dir": str(tmp_path / "cache")} | kwargs
    datamodule = DistanceMapDataModule(str(root), **options)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_annotation_planes_match_the_frame_labels_under_the_same_crops(cityscapes_demo: Path, tmp_path: Path):
    datamodule = _datamodule(cityscapes_demo, tmp_path)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["frame_classes"].shape == (2, 7, 32, 32)
    assert torch.equal(batch["frame_classes"], batch["frame_labels"])
    assert torch.equal(batch["frame_instances"], batch["frame_instances"].clone())
    uncropped = next(iter(datamodule.val_dataloader()))
    for frame in range(7):
        expected = encode_frame(uncropped["frame_classes"][0, frame].numpy(),
                                uncropped["frame_instances"][0, frame].numpy())
        np.testing.assert_allclose(uncropped["frame_values"][0, frame].float().numpy(), expected, atol=2e-3)
    assert torch.equal(uncropped["frame_classes"][:, -1].long(), uncropped["labels"].long())


def test_cache_is_refused_when_the_contour_profile_changes(cityscapes_demo: Path, tmp_path: Path):
    first = _datamodule(cityscapes_demo, tmp_path)
    path = first.output_cache_path("val")
    with pytest.raises(CacheError, match="contour_width"):
        ShardedArrayCache(path, {**first.output_meta("val"), "contour_width": 9.0})
    second = _datamodule(cityscapes_demo, tmp_path, contour_width=5.0)
    assert second.output_cache_path("val") != path
    values = ShardedArrayCache(second.output_cache_path("val"), second.output_meta("val")).gather(
        np.arange(1), np.arange(7))["frame_values"]
    assert second.output_meta("val")["contour_width"] == 5.0 and values.dtype == np.float16


def test_predictions_source_runs_the_exported_models(cityscapes_demo: Path, tmp_path: Path,
                                                     segmenter_weights: Path, detector_weights: Path):
    datamodule = _datamodule(cityscapes_demo, tmp_path, source="predictions", segmenter_weights=str(segmenter_weights),
                             detector_weights=str(detector_weights), max_sequences=1, val_batch_size=1)
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["frame_classes"].shape == (1, 7, 64, 128)
    assert batch["frame_classes"].max() < 19
    assert "frame_labels" not in batch
    name = datamodule.output_cache_path("val").name
    assert "predictions" in name and datamodule.model_shas()["detector_sha256"][:12] in name


def test_predictions_source_needs_both_models(cityscapes_demo: Path, segmenter_weights: Path):
    with pytest.raises(ValueError, match="detector_weights"):
        DistanceMapDataModule(str(cityscapes_demo), source="predictions", segmenter_weights=str(segmenter_weights))
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        DistanceMapDataModule(str(cityscapes_demo), source="predictions", segmenter_weights=str(segmenter_weights),
                              detector_weights="nowhere.pt")


def test_annotation_source_without_per_frame_labels_names_the_missing_folder(cityscapes_demo: Path, tmp_path: Path):
    root = tmp_path / "cityscapes"
    shutil.copytree(cityscapes_demo, root, ignore=shutil.ignore_patterns(".genforecast_cache", "gtFine_sequence"))
    with pytest.raises(FileNotFoundError, match="gtFine_sequence"):
        _datamodule(root, tmp_path)


class FakeFrameObjects:
    """Objects from pixel values, standing in for the exported models (an untrained detector pastes 100 masks per
    frame, tens of seconds on the CPU): cars where the red channel is high, one instance per frame."""

    def __init__(self, segmenter_weights: str, detector_weights: str, score_threshold: float, device: torch.device,
                 batch_size: int) -> None:
        self.device = device

    def __call__(self, frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        cars = (frames[:, 0] > 160).cpu().numpy()
        return (np.where(cars, 13, 0).astype(np.uint8), np.where(cars, 26001, 0).astype(np.uint16))


def test_predict_frames_get_the_planes_the_predictions_cache_holds(cityscapes_demo: Path, tmp_path: Path,
                                                                    segmenter_weights: Path, detector_weights: Path,
                                                                    monkeypatch):
    monkeypatch.setattr("datamodules.distance_map_planes.FrameObjectsFromModels", FakeFrameObjects)
    options = {"source": "predictions", "segmenter_weights": str(segmenter_weights),
               "detector_weights": str(detector_weights), "horizon": "mid", "resolution": SIZE, "val_batch_size": 1,
               "cache_dir": str(tmp_path / "cache")}
    cached = DistanceMapDataModule(str(cityscapes_demo), **options)
    cached.trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.PREDICTING))
    cached.prepare_data()  # predicting the val split: only its caches are built
    assert not cached.output_cache_path("train").exists()
    cached.setup("predict")
    expected = next(iter(cached.predict_dataloader()))
    assert (expected["frame_classes"] == 13).any() and (expected["frame_classes"] == 0).any()
    frames = DistanceMapDataModule(str(cityscapes_demo), predict_frames=str(cityscapes_demo / "leftImg8bit_sequence"),
                                   **options)
    frames.setup("predict")
    position = frames.predict_set.windows.index(next(window for window in frames.predict_set.windows
                                                      if window.names[-1] == expected["name"][0]))
    batch = frames.on_after_batch_transfer(frames.predict_dataloader().dataset[torch.tensor([position])], 0)
    for name in ("frame_classes", "frame_instances", "frame_values"):
        assert batch[name].dtype == expected[name].dtype and torch.equal(batch[name], expected[name])


def test_predict_frames_need_the_predictions_source(cityscapes_demo: Path, tmp_path: Path):
    datamodule = DistanceMapDataModule(str(cityscapes_demo), predict_frames=str(tmp_path))
    with pytest.raises(ValueError, match="source 'predictions'"):
        datamodule.setup("predict")
