"""Cached FPN features of the F2F detector: equal to on-the-fly extraction, size-checked, refused when stale,
resumable."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import datamodules.fpn_features as fpn_module
from datamodules.cache import MANIFEST_NAME, CacheError, ShardedArrayCache, shard_path, sharded_cache_complete
from datamodules.cityscapes import CachedSequences
from datamodules.fpn_features import FPNFeatureDataModule, cache_size_refusal, extract_features
from datamodules.frame_outputs import file_sha256
from lightning_modules.f2f_forecaster import F2FForecaster, cached_feature_key
from networks.detector import build_mask_rcnn, export_detector, fpn_features, load_exported_detector

SIZE = (64, 128)
LEVELS = ("p5", "p4", "p3", "p2")


class KilledAfter:
    """:func:`fpn_features` that raises once it has seen ``limit`` frames, like a job killed mid-extraction."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.frames_seen = 0

    def __call__(self, detector, frames: torch.Tensor):
        if self.frames_seen >= self.limit:
            raise KeyboardInterrupt
        self.frames_seen += len(frames)
        return fpn_features(detector, frames)


def make_datamodule(root: Path, weights: Path, cache_dir: Path, **options) -> FPNFeatureDataModule:
    options = {"cached_levels": LEVELS, "horizon": "short", "resolution": SIZE, "batch_size": 1,
               "val_batch_size": 1, "load_instances": False, "max_sequences": 2, "extraction_batch_size": 7,
               "extraction_device": "cpu", **options}
    return FPNFeatureDataModule(str(root), detector_weights=str(weights), cache_dir=str(cache_dir), **options)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def datamodule(cityscapes_demo: Path, detector_weights: Path, cache_dir: Path) -> FPNFeatureDataModule:
    datamodule = make_datamodule(cityscapes_demo, detector_weights, cache_dir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def all_frames(datamodule: FPNFeatureDataModule, split: str) -> CachedSequences:
    return CachedSequences(datamodule.cache_path(split), datamodule._cache_meta(split),
                           range(len(datamodule.cached_indices)), crop_size=None, with_instances=False)


def test_cached_features_equal_the_forecasters_own_extraction(datamodule, detector_weights: Path, monkeypatch):
    torch.manual_seed(0)
    model = F2FForecaster(str(detector_weights), width_multiplier=1 / 32)
    sha256 = file_sha256(detector_weights)
    assert datamodule.output_cache_path("train").name.startswith(f"fpn_features_train_64x128_p5p4p3p2_{sha256[:12]}_")
    assert not any(key.startswith("features_") for key in next(iter(datamodule.val_dataloader())))
    for batch in list(datamodule.train_dataloader()):
        assert batch["frames"].shape == (1, 5, 3, *SIZE)
        live, _ = model.features(batch["frames"])
        for level in LEVELS:
            cached = batch[cached_feature_key(level)]
            assert cached.dtype == torch.float16 and cached.shape == live[level].shape
            torch.testing.assert_close(cached.float(), live[level], rtol=1e-3, atol=1e-5)

    monkeypatch.setattr(fpn_module, "load_exported_detector", lambda path: pytest.fail("re-extracted"))
    datamodule.prepare_data()


def test_another_detectors_features_get_their_own_cache_and_are_refused_elsewhere(
        datamodule, cityscapes_demo: Path, cache_dir: Path, tmp_path: Path):
    torch.manual_seed(1)
    other_model = build_mask_rcnn("resnet18", min_size=64, max_size=128, box_head_size=64, mask_head_channels=16)
    other_weights = export_detector(other_model, tmp_path / "other_detector.pt")
    other = make_datamodule(cityscapes_demo, other_weights, cache_dir)
    other.prepare_data()
    assert other.output_cache_path("train") != datamodule.output_cache_path("train")
    assert sharded_cache_complete(other.output_cache_path("train"), other.output_meta("train"))

    cache, other_meta = datamodule.output_cache_path("train"), other.output_meta("train")
    message = (f"'detector_sha256' is '{datamodule.detector_sha256()}' but '{other.detector_sha256()}' was "
               "expected")
    with pytest.raises(CacheError, match=message):
        ShardedArrayCache(cache, other_meta)
    with pytest.raises(CacheError, match=message):
        extract_features(load_exported_detector(other_weights), all_frames(other, "train"), cache, other_meta,
                         batch_size=7, device="cpu")
    ours = ShardedArrayCache(cache, datamodule.output_meta("train")).gather(np.arange(2), np.arange(7))
    theirs = ShardedArrayCache(other.output_cache_path("train"), other_meta).gather(np.arange(2), np.arange(7))
    assert not np.array_equal(ours["p5"], theirs["p5"])


def test_a_cache_over_the_size_limit_is_refused_with_the_disk_arithmetic():
    paper = {"resolution": (1024, 2048), "snippets": 2975, "frames_per_snippet": 7}
    assert cache_size_refusal(("p5", "p4", "p3"), **paper, max_cache_gib=512) is None
    refusal = cache_size_refusal(("p5", "p4", "p3", "p2"), **paper, max_cache_gib=512)
    assert "2,975 training snippets x 7 cached frames = 20,825 maps per level" in refusal
    assert "P2 256 x 256 x 512 values per map, 1.27 TiB (1.40 TB)" in refusal
    assert "P3 256 x 128 x 256 values per map, 325 GiB" in refusal
    assert "P5 256 x 32 x 64 values per map, 20.3 GiB" in refusal
    demo = {"resolution": (128, 256), "snippets": 18, "frames_per_snippet": 7}
    assert cache_size_refusal(("p5", "p4", "p3", "p2"), **demo, max_cache_gib=0.164) is None  # 167.3 MiB
    assert "167 MiB" in cache_size_refusal(("p5", "p4", "p3", "p2"), **demo, max_cache_gib=0.163)


def test_bad_levels_crops_and_oversized_caches_are_refused_with_the_reason(cityscapes_demo: Path,
                                                                          detector_weights: Path, tmp_path: Path):
    for levels in (["p6"], [], ["p5", "p5"]):
        with pytest.raises(ValueError, match="cached_levels must be distinct levels among"):
            make_datamodule(cityscapes_demo, detector_weights, tmp_path, cached_levels=levels)
    with pytest.raises(ValueError, match="feature crops are not supported"):
        make_datamodule(cityscapes_demo, detector_weights, tmp_path, crop_size=32)
    assert make_datamodule(cityscapes_demo, detector_weights, tmp_path, cached_levels=["p3", "p5"]).cached_levels \
        == ("p5", "p3")
    oversized = make_datamodule(cityscapes_demo, detector_weights, tmp_path / "cache", max_cache_gib=1e-4)
    with pytest.raises(ValueError, match=r"P5/P4/P3/P2 at 64x128 would take .* over max_cache_gib = 0\.0001: "
                                         r"2 training snippets x 7 cached frames"):
        oversized.prepare_data()
    assert not (tmp_path / "cache").exists()


def test_validating_extracts_no_features(cityscapes_demo: Path, detector_weights: Path, tmp_path: Path,
                                        monkeypatch):
    datamodule = make_datamodule(cityscapes_demo, detector_weights, tmp_path / "cache", load_instances=True)
    monkeypatch.setattr("datamodules.frame_outputs.extract_frame_outputs",
                        lambda *args, **kwargs: pytest.fail("extracted features"))
    model = F2FForecaster(str(detector_weights), width_multiplier=1 / 32, horizon_steps=1, max_detections=5,
                          evaluate_baselines=False)
    trainer = L.Trainer(accelerator="cpu", limit_val_batches=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.validate(model, datamodule=datamodule)
    assert not any(path.name.startswith("fpn_features") for path in (tmp_path / "cache").iterdir())


def test_interrupted_extraction_resumes_after_its_finished_shards(datamodule, detector_weights: Path,
                                                                   tmp_path: Path, monkeypatch):
    frames, meta = all_frames(datamodule, "train"), datamodule.output_meta("train")
    detector, cache = load_exported_detector(detector_weights), tmp_path / "features"
    monkeypatch.setattr(fpn_module, "fpn_features", KilledAfter(limit=7))
    with pytest.raises(KeyboardInterrupt):
        extract_features(detector, frames, cache, meta, batch_size=7, device="cpu", shard_size=1)
    assert sorted(path.name for path in cache.iterdir()) == ["shard_00000.npz"]
    assert not sharded_cache_complete(cache, meta)
    first_shard = shard_path(cache, 0).stat()

    resumed = KilledAfter(limit=100)
    monkeypatch.setattr(fpn_module, "fpn_features", resumed)
    extract_features(detector, frames, cache, meta, batch_size=7, device="cpu", shard_size=1)
    assert resumed.frames_seen == 7
    assert shard_path(cache, 0).stat().st_mtime_ns == first_shard.st_mtime_ns
    assert sorted(path.name for path in cache.iterdir()) == [MANIFEST_NAME, "shard_00000.npz", "shard_00001.npz"]
    indices, positions = np.arange(2), np.arange(7)
    resumed_features = ShardedArrayCache(cache, meta).gather(indices, positions)
    reference = ShardedArrayCache(datamodule.output_cache_path("train"), meta).gather(indices, positions)
    for level in LEVELS:
        np.testing.assert_array_equal(resumed_features[level], reference[level])


def test_forecaster_trains_on_cached_features_without_the_detector(datamodule, detector_weights: Path,
                                                                   tmp_path: Path, monkeypatch):
    torch.manual_seed(0)
    model = F2FForecaster(str(detector_weights), width_multiplier=1 / 32, horizon_steps=1)
    monkeypatch.setattr(F2FForecaster, "features", lambda self, frames: pytest.fail("the detector ran"))
    trainer = L.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss"])


def test_fit_refuses_features_cached_with_another_detector(datamodule, detector_weights: Path, tmp_path: Path):
    torch.manual_seed(2)
    other_model = build_mask_rcnn("resnet18", min_size=64, max_size=128, box_head_size=64, mask_head_channels=16)
    other_weights = export_detector(other_model, tmp_path / "forecasters_detector.pt")
    model = F2FForecaster(str(other_weights), train_levels=["p5"], width_multiplier=1 / 32, horizon_steps=1)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="forecasters_detector.pt"):
        trainer.fit(model, datamodule=datamodule)
