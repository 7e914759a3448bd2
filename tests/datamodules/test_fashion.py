from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
import torch

from datamodules import fashion
from datamodules.cache import CacheError, read_array_cache
from datamodules.fashion import (
    SHAPES,
    TEXTURES,
    CachedCatalogue,
    FashionCatalogueDataModule,
    build_training_cache,
    read_catalogue,
    read_deepfashion,
    stratified_split,
    texture_of_attribute,
)
from datamodules.sampling import ResumableDataLoader
from genforecast.demo_data.fashion import write_deepfashion_lists, write_fashion_catalogue


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return write_fashion_catalogue(tmp_path_factory.mktemp("catalogue"), images_per_combination=2, size=32, seed=0)


@pytest.fixture(scope="module")
def deepfashion(tmp_path_factory):
    return write_deepfashion_lists(tmp_path_factory.mktemp("deepfashion"), images_per_category=7, size=32, seed=0)


@pytest.fixture
def small_catalogue(tmp_path):
    return write_fashion_catalogue(tmp_path / "small", images_per_combination=1, size=16, seed=1)


def test_read_catalogue_returns_labelled_entries(catalogue):
    entries = read_catalogue(catalogue)
    assert len(entries) == 7 * 7 * 2
    assert {entry.shape for entry in entries} == set(range(len(SHAPES)))
    assert {entry.texture for entry in entries} == set(range(len(TEXTURES)))
    assert all(entry.image.is_file() and entry.mask is not None and entry.mask.is_file() for entry in entries)


def test_missing_catalogue_names_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        read_catalogue(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value)
    assert "labels.csv" in str(error.value) and "images/<id>.png" in str(error.value)

    with pytest.raises(FileNotFoundError, match="labels.csv do not exist"):
        read_catalogue(tmp_path)
    assert fashion.CATALOGUE_LAYOUT in fashion.__doc__


def test_unknown_label_names_line_and_allowed_names(tmp_path):
    (tmp_path / "labels.csv").write_text("image,shape,texture,mask\n"
                                         "images/a.png,Dress,striped,\n"
                                         "images/b.png,gown,striped,\n")
    with pytest.raises(ValueError) as error:
        read_catalogue(tmp_path)
    message = str(error.value)
    assert "line 3" in message and "'gown'" in message and all(shape in message for shape in SHAPES)

    (tmp_path / "labels.csv").write_text("image,shape,texture,mask\nimages/a.png,dress,paisley,\n")
    with pytest.raises(ValueError, match="allowed textures: uniform, dotted, animal print"):
        read_catalogue(tmp_path)


@pytest.mark.parametrize(("attribute", "texture"), [
    ("polka dot", "dotted"), ("leopard print", "animal print"), ("abstract floral", "floral"),
    ("pinstriped", "striped"), ("plaid", "tiled"), ("geometric tile", "tiled"), ("graphic logo", "graphical"),
    ("abstract print", "graphical"), ("washed", None), ("knit", None),
])
def test_texture_keyword_rules(attribute, texture):
    assert texture_of_attribute(attribute) == texture


def test_deepfashion_adapter_maps_labels_and_counts_left_out(deepfashion):
    entries, left_out = read_deepfashion(deepfashion, "all")
    # 9 demo categories x 7 images; Jeans and Romper do not map (14); every fifth image has conflicting textures.
    conflicting = sum(1 for number in range(49) if number % 5 == 4)
    assert (len(entries), left_out) == (49 - conflicting, 14 + conflicting)
    expected_shapes = {"Dress": "dress", "Skirt": "skirt", "Blazer": "jacket", "Hoodie": "pullover", "Tee": "t-shirt",
                       "Parka": "coat", "Blouse": "top"}
    categories = list(expected_shapes)
    for entry in entries:
        category = entry.image.parent.name.removeprefix("Demo_")
        copy = int(entry.image.stem.removeprefix("img_"))
        assert SHAPES[entry.shape] == expected_shapes[category]
        assert TEXTURES[entry.texture] == TEXTURES[(copy + categories.index(category)) % 7]
        assert entry.mask is None and entry.image.is_file()

    train, _ = read_deepfashion(deepfashion, "train")
    val, _ = read_deepfashion(deepfashion, "val")
    test, _ = read_deepfashion(deepfashion, "test")
    assert len(train) + len(val) + len(test) == len(entries) and len(val) > 0
    with pytest.raises(FileNotFoundError, match="list_category_cloth.txt"):
        read_deepfashion(deepfashion / "img", "train")


def test_training_cache_contents(catalogue, tmp_path):
    entries = read_catalogue(catalogue)
    assert build_training_cache(entries, 16, tmp_path / "cache.npz") == (len(entries), 0)
    arrays, meta = read_array_cache(tmp_path / "cache.npz")

    assert arrays["images"].shape == (len(entries), 3, 16, 16) and arrays["images"].dtype == np.uint8
    assert arrays["masks"].shape == (len(entries), 1, 16, 16) and set(np.unique(arrays["masks"])) == {0, 1}
    assert arrays["shapes"].dtype == np.int64 and arrays["textures"].dtype == np.int64
    np.testing.assert_array_equal(arrays["shapes"], [entry.shape for entry in entries])
    assert meta["resolution"] == 16 and meta["num_entries"] == len(entries) and meta["skipped"] == 0
    background = arrays["images"].transpose(0, 2, 3, 1)[arrays["masks"][:, 0] == 0]
    assert background.mean() > 245


def test_derived_masks_match_drawn_masks(tmp_path):
    with_masks = write_fashion_catalogue(tmp_path / "masked", images_per_combination=1, size=32, seed=4)
    without_masks = write_fashion_catalogue(tmp_path / "plain", images_per_combination=1, size=32, seed=4,
                                            with_masks=False)
    plain_entries = read_catalogue(without_masks)
    assert all(entry.mask is None for entry in plain_entries)
    build_training_cache(read_catalogue(with_masks), 32, tmp_path / "masked.npz")
    build_training_cache(plain_entries, 32, tmp_path / "plain.npz")
    drawn = read_array_cache(tmp_path / "masked.npz")[0]["masks"].astype(bool)
    derived = read_array_cache(tmp_path / "plain.npz")[0]["masks"].astype(bool)

    intersection_over_union = (drawn & derived).sum(axis=(1, 2, 3)) / (drawn | derived).sum(axis=(1, 2, 3))
    assert intersection_over_union.min() > 0.9


def test_corrupt_image_raises_or_is_skipped(small_catalogue, tmp_path, caplog):
    entries = read_catalogue(small_catalogue)
    entries[5].image.write_bytes(b"\x89PNG garbage, not an image")

    with pytest.raises(ValueError, match=str(entries[5].image)):
        build_training_cache(entries, 8, tmp_path / "cache.npz")
    assert not (tmp_path / "cache.npz").exists()

    with caplog.at_level(logging.WARNING, logger="datamodules.fashion"):
        assert build_training_cache(entries, 8, tmp_path / "cache.npz", skip_corrupt=True) == (len(entries) - 1, 1)
    assert str(entries[5].image) in caplog.text
    arrays, meta = read_array_cache(tmp_path / "cache.npz")
    assert 5 not in arrays["entry_index"] and meta["skipped_paths"] == [str(entries[5].image)]


def test_missing_image_raises_file_not_found(small_catalogue, tmp_path):
    entries = read_catalogue(small_catalogue)
    entries[0].image.unlink()
    with pytest.raises(FileNotFoundError, match=str(entries[0].image)):
        build_training_cache(entries, 8, tmp_path / "cache.npz")


def test_stratified_split_is_deterministic_and_covers_every_shape():
    labels = torch.arange(70) % 7
    train, val = stratified_split(labels, 0.2, seed=3)
    again_train, again_val = stratified_split(labels, 0.2, seed=3)
    _, other_val = stratified_split(labels, 0.2, seed=4)

    assert torch.equal(val, again_val) and torch.equal(train, again_train) and not torch.equal(val, other_val)
    assert len(val) == 14 and torch.equal(torch.cat([train, val]).sort().values, torch.arange(70))
    assert torch.equal(labels[val].bincount(), torch.full((7,), 2))
    assert len(stratified_split(labels, 0.0, seed=0)[1]) == 0


def test_cached_catalogue_gathers_batches_and_moves():
    dataset = CachedCatalogue(torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 2, 2),
                              torch.ones(5, 1, 2, 2, dtype=torch.uint8), torch.arange(5), torch.arange(5) % 2)
    batch = dataset.to("cpu")[torch.tensor([4, 1])]
    assert len(dataset) == 5 and batch["image"].shape == (2, 3, 2, 2)
    assert batch["shape"].tolist() == [4, 1] and batch["texture"].tolist() == [0, 1]


def _data_module(root, cache_dir, **overrides) -> FashionCatalogueDataModule:
    settings = {"resolution": 16, "batch_size": 8, "val_fraction": 0.1, "cache_dir": str(cache_dir), "seed": 0}
    return FashionCatalogueDataModule(str(root), **(settings | overrides))


def test_data_module_end_to_end(catalogue, tmp_path, monkeypatch):
    module = _data_module(catalogue, tmp_path)
    module.prepare_data()
    module.setup("fit")
    loader = module.train_dataloader()
    batch = next(iter(loader))

    assert isinstance(loader, ResumableDataLoader) and len(loader) == len(module.train_set) // 8
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 3, 16, 16)
    assert batch["mask"].dtype == torch.uint8 and batch["mask"].shape == (8, 1, 16, 16)
    assert batch["shape"].dtype == torch.int64 and batch["texture"].dtype == torch.int64 and batch["shape"].shape == (8,)
    assert (len(module.train_set), len(module.val_set)) == (88, 10)
    assert sum(len(batch["shape"]) for batch in module.val_dataloader()) == 10
    assert module.describe() | {"root": None} == {
        "root": None, "layout": "catalogue", "resolution": 16, "train_images": 88, "val_images": 10,
        "skipped_images": 0, "unmapped_images": 0, "num_shapes": 7, "num_textures": 7}

    def refuse_rebuild(*args, **kwargs):
        raise AssertionError("the valid cache should have been reused")

    with monkeypatch.context() as patched:
        patched.setattr(fashion, "build_training_cache", refuse_rebuild)
        _data_module(catalogue, tmp_path).prepare_data()

    smaller = _data_module(catalogue, tmp_path, resolution=8)
    smaller.prepare_data()
    smaller.setup()
    assert smaller.train_set.images.shape[-2:] == (8, 8)
    assert smaller.cache_path != module.cache_path and module.cache_path.exists()


def test_changed_catalogue_rebuilds_cache(small_catalogue, tmp_path):
    module = _data_module(small_catalogue, tmp_path)
    module.prepare_data()
    written = module.cache_path.stat().st_mtime_ns
    image = read_catalogue(small_catalogue)[0].image
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))

    with pytest.raises(CacheError, match="fingerprint"):
        _data_module(small_catalogue, tmp_path).setup()
    module.prepare_data()
    assert module.cache_path.stat().st_mtime_ns != written
    _data_module(small_catalogue, tmp_path).setup()


def test_skip_corrupt_through_the_data_module(small_catalogue, tmp_path):
    read_catalogue(small_catalogue)[3].image.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot decode image"):
        _data_module(small_catalogue, tmp_path).prepare_data()

    module = _data_module(small_catalogue, tmp_path, skip_corrupt=True, val_fraction=0.0)
    module.prepare_data()
    module.setup()
    assert module.skipped_images == 1 and len(module.train_set) == 48 and module.val_dataloader() == []
    with pytest.raises(ValueError, match="cannot decode image"):
        _data_module(small_catalogue, tmp_path).prepare_data()


def test_data_module_on_deepfashion_layout(deepfashion, tmp_path):
    module = _data_module(deepfashion, tmp_path, layout="deepfashion", batch_size=4)
    module.prepare_data()
    module.setup()
    train_entries, left_out = read_deepfashion(deepfashion, "train")
    assert module.unmapped_images == left_out > 0
    assert len(module.train_set) + len(module.val_set) == len(train_entries)
    assert next(iter(module.train_dataloader()))["image"].shape == (4, 3, 16, 16)


def test_setup_without_cache_and_bad_arguments(small_catalogue, tmp_path):
    with pytest.raises(CacheError, match="prepare_data"):
        _data_module(small_catalogue, tmp_path).setup()
    with pytest.raises(ValueError, match="layout"):
        _data_module(small_catalogue, tmp_path, layout="imagenet")
    with pytest.raises(RuntimeError, match="setup"):
        _data_module(small_catalogue, tmp_path).train_dataloader()
    too_big = _data_module(small_catalogue, tmp_path, batch_size=64)
    too_big.prepare_data()
    too_big.setup()
    with pytest.raises(ValueError, match="fewer than batch_size"):
        too_big.train_dataloader()


def test_default_cache_dir_is_inside_the_root(small_catalogue):
    copy = shutil.copytree(small_catalogue, small_catalogue.parent / "copy")
    module = FashionCatalogueDataModule(str(copy), resolution=8, batch_size=4)
    module.prepare_data()
    assert module.cache_path == copy / ".genforecast_cache" / "catalogue_8px.npz" and module.cache_path.is_file()


def test_predict_loader_requests_numbered_samples_with_the_split_items(catalogue, tmp_path):
    module = _data_module(catalogue, tmp_path, num_samples=13)
    module.prepare_data()
    module.setup("predict")
    batches = list(module.predict_dataloader())
    assert [len(batch["index"]) for batch in batches] == [8, 5]
    assert torch.cat([batch["index"] for batch in batches]).tolist() == list(range(13))
    assert batches[1]["name"] == ["000008", "000009", "000010", "000011", "000012"]
    # items cycle through the val split (10 images): sample 12 paints into val item 2's mask
    assert torch.equal(batches[1]["mask"][4], module.val_set.masks[2])
    assert set(batches[0]) == {"image", "mask", "shape", "texture", "index", "name"}
    training = _data_module(catalogue, tmp_path, num_samples=2, predict_split="train", val_fraction=0.0)
    training.setup("predict")
    assert torch.equal(next(iter(training.predict_dataloader()))["image"], training.train_set.images[:2])
    empty = _data_module(catalogue, tmp_path, val_fraction=0.0)
    empty.setup("predict")
    with pytest.raises(ValueError, match="predict_split to 'train'"):
        empty.predict_dataloader()
