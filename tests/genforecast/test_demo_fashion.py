from __future__ import annotations

import csv
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from datamodules.fashion import SHAPES, TEXTURES
from genforecast.demo_data.fashion import draw_garment, write_deepfashion_lists, write_fashion_catalogue


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return write_fashion_catalogue(tmp_path_factory.mktemp("demo"), images_per_combination=3, size=48, seed=0)


def _rows(root) -> list[dict[str, str]]:
    with (root / "labels.csv").open(newline="") as labels:
        return list(csv.DictReader(labels))


def test_catalogue_layout(catalogue):
    rows = _rows(catalogue)
    assert list(rows[0]) == ["image", "shape", "texture", "mask"]
    assert len(rows) == 7 * 7 * 3
    assert {row["shape"] for row in rows} == set(SHAPES) and {row["texture"] for row in rows} == set(TEXTURES)
    image, mask = Image.open(catalogue / rows[0]["image"]), Image.open(catalogue / rows[0]["mask"])
    assert (image.mode, image.size, mask.mode, mask.size) == ("RGB", (48, 48), "L", (48, 48))
    pixels, mask_values = np.asarray(image), np.asarray(mask)
    assert set(np.unique(mask_values)) == {0, 255}
    assert (pixels[mask_values == 0] == 255).all() and (pixels[mask_values == 255].min(axis=1) < 240).all()


def test_shapes_have_distinct_silhouettes(catalogue):
    rows = _rows(catalogue)
    mean_masks = {shape: np.mean([np.asarray(Image.open(catalogue / row["mask"])) / 255 for row in rows
                                  if row["shape"] == shape], axis=0) for shape in SHAPES}
    for first, second in combinations(SHAPES, 2):
        assert np.abs(mean_masks[first] - mean_masks[second]).mean() > 0.04, (first, second)


def test_uniform_texture_is_smoothest(catalogue):
    rows = _rows(catalogue)

    def roughness(row: dict[str, str]) -> float:
        pixels = np.asarray(Image.open(catalogue / row["image"]), dtype=np.float64)
        inside = np.asarray(Image.open(catalogue / row["mask"])) > 0
        interior = inside[1:, 1:] & inside[:-1, 1:] & inside[1:, :-1]
        change = np.abs(np.diff(pixels, axis=0))[:, 1:] + np.abs(np.diff(pixels, axis=1))[1:, :]
        return change.sum(axis=2)[interior].mean()

    by_texture = {texture: np.mean([roughness(row) for row in rows if row["texture"] == texture])
                  for texture in TEXTURES}
    assert all(by_texture["uniform"] * 5 < value for texture, value in by_texture.items() if texture != "uniform")


def test_catalogue_is_deterministic_given_the_seed(tmp_path):
    first = write_fashion_catalogue(tmp_path / "a", images_per_combination=1, size=24, seed=5)
    second = write_fashion_catalogue(tmp_path / "b", images_per_combination=1, size=24, seed=5)
    other = write_fashion_catalogue(tmp_path / "c", images_per_combination=1, size=24, seed=6)
    names = [row["image"] for row in _rows(first)]
    assert names == [row["image"] for row in _rows(second)]
    assert all((first / name).read_bytes() == (second / name).read_bytes() for name in names)
    assert any((first / name).read_bytes() != (other / name).read_bytes() for name in names)
    without_masks = write_fashion_catalogue(tmp_path / "d", images_per_combination=1, size=24, seed=5,
                                            with_masks=False)
    assert all(row["mask"] == "" for row in _rows(without_masks)) and not (without_masks / "masks").exists()


def test_draw_garment_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown shape"):
        draw_garment("gown", "uniform", 16, np.random.default_rng(0))


def test_deepfashion_tree_layout(tmp_path):
    root = write_deepfashion_lists(tmp_path, images_per_category=2, size=24, seed=0)
    lists = ["Anno/list_category_cloth.txt", "Anno/list_category_img.txt", "Anno/list_attr_cloth.txt",
             "Anno/list_attr_img.txt", "Eval/list_eval_partition.txt"]
    for name in lists:
        lines = (root / name).read_text().splitlines()
        assert int(lines[0]) == len(lines) - 2
    assert (root / "Anno/list_category_cloth.txt").read_text().splitlines()[1] == "category_name  category_type"
    image_lines = (root / "Anno/list_category_img.txt").read_text().splitlines()[2:]
    first_image = Image.open(root / image_lines[0].split()[0])
    assert first_image.format == "JPEG" and first_image.size == (24, 32)
    attribute_count = len((root / "Anno/list_attr_cloth.txt").read_text().splitlines()) - 2
    first_attributes = (root / "Anno/list_attr_img.txt").read_text().splitlines()[2].split()[1:]
    assert len(first_attributes) == attribute_count and set(first_attributes) <= {"1", "-1"}
