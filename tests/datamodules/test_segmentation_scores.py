from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from datamodules.augment import to_unit_range
from datamodules.cache import (
    MANIFEST_NAME,
    CacheError,
    ShardedArrayCache,
    read_array_cache,
    shard_path,
    sharded_cache_complete,
)
from datamodules.cityscapes import CachedSequences, CityscapesSequenceDataModule
from datamodules.frame_outputs import file_sha256, frame_output_meta
from datamodules.segmentation_scores import (
    SCORE_CACHE_KIND,
    SCORE_CACHE_VERSION,
    SegmentationScoreDataModule,
    extract_scores,
)
from networks.segmenter import SegmentationNetwork, export_segmenter

SIZE = (64, 128)
SEGMENTER_A, SEGMENTER_B = "a" * 64, "b" * 64


class PixelwiseSegmenter(nn.Module):
    """A 1x1 convolution: each pixel's scores depend on that pixel only, so crops commute with segmenting."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 19, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(19, 3, 1, 1, generator=generator) * 4)
            self.conv.bias.copy_(torch.randn(19, generator=generator))
        self.images_seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images_seen += len(images)
        return self.conv(images)


class KilledAfter(PixelwiseSegmenter):
    """Raises once it has segmented ``limit`` images, like a job killed mid-extraction."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.images_seen >= self.limit:
            raise KeyboardInterrupt
        return super().forward(images)


def expected_scores(frames: torch.Tensor) -> np.ndarray:
    """Float16 scores (..., 19, h, w) of uint8 frames (..., 3, h, w) under :class:`PixelwiseSegmenter`."""
    with torch.no_grad():
        flat = frames.reshape(-1, *frames.shape[-3:])
        scores = PixelwiseSegmenter()(to_unit_range(flat)).half()
    return scores.reshape(*frames.shape[:-3], *scores.shape[1:]).numpy()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def sequences(cityscapes_demo: Path, cache_dir: Path) -> CityscapesSequenceDataModule:
    datamodule = CityscapesSequenceDataModule(str(cityscapes_demo), horizon="short", resolution=SIZE, crop_size=32,
                                              batch_size=2, val_batch_size=2, load_instances=False,
                                              cache_dir=str(cache_dir))
    datamodule.prepare_data()
    return datamodule


def all_frames(datamodule: CityscapesSequenceDataModule, split: str) -> CachedSequences:
    meta = datamodule._cache_meta(split)
    return CachedSequences(datamodule.cache_path(split), meta, range(len(datamodule.cached_indices)))


def meta_for(datamodule: CityscapesSequenceDataModule, split: str, segmenter: str = SEGMENTER_A) -> dict:
    identity = {"segmenter_sha256": segmenter, "architecture": "pixelwise", "num_classes": 19}
    return frame_output_meta(SCORE_CACHE_KIND, SCORE_CACHE_VERSION, identity, datamodule._cache_meta(split))


def test_extraction_writes_shards_then_manifest_and_resumes_after_a_kill(sequences, tmp_path: Path):
    frames, meta = all_frames(sequences, "train"), meta_for(sequences, "train")
    cache = tmp_path / "scores"
    frame_count = len(sequences.cached_indices)
    with pytest.raises(KeyboardInterrupt):
        extract_scores(KilledAfter(limit=2 * frame_count), frames, cache, meta, batch_size=5, device="cpu",
                       shard_size=2)
    assert sorted(path.name for path in cache.iterdir()) == ["shard_00000.npz"]
    assert not sharded_cache_complete(cache, meta)
    first_shard = shard_path(cache, 0).stat()

    segmenter = PixelwiseSegmenter()
    assert extract_scores(segmenter, frames, cache, meta, batch_size=5, device="cpu", shard_size=2) == cache
    assert segmenter.images_seen == frame_count
    assert shard_path(cache, 0).stat().st_mtime_ns == first_shard.st_mtime_ns
    assert sorted(path.name for path in cache.iterdir()) == [MANIFEST_NAME, "shard_00000.npz", "shard_00001.npz"]
    assert sharded_cache_complete(cache, meta)

    arrays, shard_meta = read_array_cache(shard_path(cache, 1), mmap=True)
    assert arrays["scores"].shape == (1, frame_count, 19, *SIZE) and arrays["scores"].dtype == np.float16
    assert (shard_meta["shard"], shard_meta["start"], shard_meta["stop"]) == (1, 2, 3)
    assert shard_meta["segmenter_sha256"] == SEGMENTER_A and shard_meta["resolution"] == list(SIZE)
    gathered = ShardedArrayCache(cache, meta).gather(np.arange(3), np.arange(frame_count))["scores"]
    np.testing.assert_allclose(gathered, expected_scores(frames[torch.arange(3)]["frames"]), rtol=1e-3, atol=1e-3)

    finished = PixelwiseSegmenter()
    extract_scores(finished, frames, cache, meta, batch_size=5, device="cpu", shard_size=2)
    assert finished.images_seen == 0


def test_scores_of_another_segmenter_or_resolution_are_refused(sequences, tmp_path: Path):
    frames, meta = all_frames(sequences, "val"), meta_for(sequences, "val")
    cache = extract_scores(PixelwiseSegmenter(), frames, tmp_path / "scores", meta, batch_size=8, device="cpu",
                           shard_size=1)
    other_segmenter = meta_for(sequences, "val", SEGMENTER_B)
    other_resolution = {**meta, "resolution": [32, 64]}
    for expected, key, stored, wanted in ((other_segmenter, "segmenter_sha256", SEGMENTER_A, SEGMENTER_B),
                                          (other_resolution, "resolution", list(SIZE), [32, 64])):
        message = f"'{key}' is {stored!r} but {wanted!r} was expected"
        with pytest.raises(CacheError, match=message.replace("[", r"\[")):
            ShardedArrayCache(cache, expected)
        with pytest.raises(CacheError, match=message.replace("[", r"\[")):
            extract_scores(PixelwiseSegmenter(), frames, cache, expected, batch_size=8, device="cpu", shard_size=1)

    (cache / MANIFEST_NAME).unlink()
    segmenter = PixelwiseSegmenter()
    with pytest.raises(CacheError, match="shard_00000.npz: cache meta 'segmenter_sha256'"):
        extract_scores(segmenter, frames, cache, other_segmenter, batch_size=8, device="cpu", shard_size=1)
    assert segmenter.images_seen == 0 and not (cache / MANIFEST_NAME).exists()


def test_datamodule_scores_align_with_frames_and_crops(sequences, cache_dir: Path, tmp_path: Path, monkeypatch):
    torch.manual_seed(0)
    weights = export_segmenter(SegmentationNetwork("lraspp_mobilenet_v3_large"), tmp_path / "segmenter.pt")
    monkeypatch.setattr(SegmentationScoreDataModule, "load_segmenter", lambda self: PixelwiseSegmenter())
    datamodule = SegmentationScoreDataModule(str(sequences.root), segmenter_weights=str(weights), horizon="short",
                                             resolution=SIZE, crop_size=32, batch_size=2, val_batch_size=2,
                                             load_instances=False, cache_dir=str(cache_dir))
    datamodule.prepare_data()
    datamodule.setup("fit")
    sha256 = file_sha256(weights)
    assert datamodule.output_cache_path("train").name.startswith(f"segmenter_scores_train_64x128_{sha256[:12]}_")
    assert datamodule.describe()["segmenter_architecture"] == "lraspp_mobilenet_v3_large"

    batch = next(iter(datamodule.train_dataloader()))
    frames = batch["frames"]
    assert frames.shape == (2, 5, 3, 32, 32)
    assert batch["scores"].shape == (2, 5, 19, 32, 32) and batch["scores"].dtype == torch.float16
    np.testing.assert_allclose(batch["scores"].numpy(), expected_scores(frames), rtol=1e-3, atol=1e-3)
    assert batch["segmenter_labels"].dtype == torch.uint8
    assert torch.equal(batch["segmenter_labels"].long(), batch["scores"][:, -1].float().argmax(dim=1))

    val_batch = next(iter(datamodule.val_dataloader()))
    assert val_batch["scores"].shape == (2, 5, 19, *SIZE)
    np.testing.assert_allclose(val_batch["scores"].numpy(), expected_scores(val_batch["frames"]), rtol=1e-3,
                               atol=1e-3)

    monkeypatch.setattr(SegmentationScoreDataModule, "load_segmenter", lambda self: pytest.fail("re-extracted"))
    datamodule.prepare_data()


def test_predict_frames_batches_get_the_segmenter_scores_on_arrival(cityscapes_demo: Path, tmp_path: Path,
                                                                   monkeypatch):
    monkeypatch.setattr(SegmentationScoreDataModule, "load_segmenter", lambda self: PixelwiseSegmenter())
    datamodule = SegmentationScoreDataModule(str(cityscapes_demo), segmenter_weights=str(tmp_path / "unused.pt"),
                                             horizon="short", resolution=SIZE, val_batch_size=3, score_batch_size=4,
                                             predict_frames=str(cityscapes_demo / "leftImg8bit_sequence" / "val"))
    datamodule.setup("predict")
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.predict_dataloader())), 0)
    assert batch["scores"].shape == (3, 5, 19, *SIZE) and batch["scores"].dtype == torch.float16
    np.testing.assert_allclose(batch["scores"].numpy(), expected_scores(batch["frames"]), rtol=1e-3, atol=1e-3)
    assert datamodule.on_after_batch_transfer(batch, 0) is batch  # batches with scores pass unchanged
