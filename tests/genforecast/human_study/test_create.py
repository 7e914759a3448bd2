"""``create``: checkpoints in, a blinded, deduplicated, scored study folder out."""

from __future__ import annotations

import json
import sqlite3
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from human_study_helpers import copy_study, created_study, synthetic_study, tiny_checkpoints
from PIL import Image

from genforecast.human_study.config import CONTROL, StudyConfig
from genforecast.human_study.create import StudyImage, create_study, generate_variant, load_generator, write_study
from genforecast.human_study.security import TOKEN_PATTERN
from genforecast.human_study.storage import add_rater, items, open_database


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, fashion_catalogue: Path, classifier_weights: Path) -> Path:
    return created_study(tmp_path_factory.getbasetemp() / "human_study_shared", fashion_catalogue, classifier_weights)


def test_study_folder_holds_every_image_once_blinded_and_scored(study: Path) -> None:
    connection = open_database(study / "study.sqlite")
    study_items = items(connection)
    connection.close()
    groups = {variant: sum(item.variant == variant for item in study_items) for variant in
              ("gan", "canh", "canh_shape", CONTROL)}
    assert groups == {"gan": 6, "canh": 6, "canh_shape": 6, CONTROL: 6}
    assert len({item.sha256 for item in study_items}) == len(study_items)
    for item in study_items:
        # Blinding: the id is random, the file is named by the id only.
        assert TOKEN_PATTERN.fullmatch(item.id) and item.file == f"images/{item.id}.png"
        with Image.open(study / item.file) as image:
            assert image.size == (32, 32) and image.mode == "RGB"
        if item.kind == "generated":
            assert item.novelty_nn is not None and item.novelty_nn > 0
            assert 0 <= item.shape_entropy <= np.log(7) + 1e-6 and 0 <= item.texture_entropy <= np.log(7) + 1e-6
        else:
            assert item.novelty_nn is None
    assert sorted(path.name for path in (study / "images").iterdir()) == sorted(f"{i.id}.png" for i in study_items)
    manifest = json.loads((study / "manifest.json").read_text())
    assert {entry["id"] for entry in manifest["items"]} == {item.id for item in study_items}
    assert manifest["resolution"] == 32
    assert stat.S_IMODE((study / "secrets.json").stat().st_mode) == 0o600


def test_controls_are_catalogue_images_prepared_like_the_training_data(study: Path) -> None:
    from datamodules.fashion import FashionCatalogueDataModule

    config = json.loads((study / "study.json").read_text())
    datamodule = FashionCatalogueDataModule(config["catalogue"], resolution=32, batch_size=1, val_fraction=0.0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    catalogue = {image.permute(1, 2, 0).numpy().tobytes() for image in datamodule.train_set.images}
    connection = open_database(study / "study.sqlite")
    controls = [item for item in items(connection) if item.kind == "control"]
    connection.close()
    for item in controls:
        assert np.asarray(Image.open(study / item.file)).tobytes() in catalogue


def test_generation_is_seeded_per_variant(tmp_path_factory: pytest.TempPathFactory) -> None:
    checkpoints = tiny_checkpoints(tmp_path_factory.getbasetemp() / "human_study_shared" / "ckpt")
    model = load_generator(checkpoints["gan"])
    first = [image.sha256 for image in generate_variant(model, "gan", 4, seed=3, masks=None, seen=set())]
    again = [image.sha256 for image in generate_variant(model, "gan", 4, seed=3, masks=None, seen=set())]
    other_name = [image.sha256 for image in generate_variant(model, "can", 4, seed=3, masks=None, seen=set())]
    other_seed = [image.sha256 for image in generate_variant(model, "gan", 4, seed=4, masks=None, seen=set())]
    assert first == again
    assert not set(first) & set(other_name) and not set(first) & set(other_seed)


class ConstantGenerator(torch.nn.Module):
    """A collapsed generator: every latent gives the same image."""

    conditional = False

    def sample_latent(self, count: int, rng: torch.Generator) -> torch.Tensor:
        return torch.randn(count, 4, generator=rng)

    def generate(self, latent: torch.Tensor, mask: object = None) -> torch.Tensor:
        return torch.zeros(latent.shape[0], 3, 32, 32)


def test_identical_images_are_kept_once_and_a_collapsed_generator_is_reported() -> None:
    with pytest.warns(UserWarning, match="only 1 distinct images"):
        images = generate_variant(ConstantGenerator(), "collapsed", 5, seed=0, masks=None, seen=set())
    assert len(images) == 1


def test_write_study_drops_duplicate_pixels(tmp_path: Path) -> None:
    pixels = np.full((32, 32, 3), 200, dtype=np.uint8)
    images = [StudyImage(pixels, "generated", "gan", "a"), StudyImage(pixels.copy(), "control", CONTROL, "b"),
              StudyImage(pixels + 1, "generated", "gan", "c")]
    config = StudyConfig(catalogue=tmp_path, variants={"gan": tmp_path / "gan.ckpt"})
    study = write_study(tmp_path / "study", config, images, resolution=32)
    connection = open_database(study / "study.sqlite")
    assert len(items(connection)) == 2
    connection.close()


def test_an_existing_study_is_never_overwritten_once_it_has_answers(tmp_path: Path) -> None:
    study = synthetic_study(tmp_path / "study", per_variant=2, controls=2)
    config = StudyConfig(catalogue=tmp_path, variants={"gan": tmp_path / "gan.ckpt"})
    image = [StudyImage(np.zeros((32, 32, 3), np.uint8), "generated", "gan", "x")]
    with pytest.raises(FileExistsError, match="not empty"):
        write_study(study, config, image, resolution=32)
    write_study(study, config, image, resolution=32, force=True)  # no answers yet: --force replaces it
    connection = open_database(study / "study.sqlite")
    assert len(items(connection)) == 1
    add_rater(connection, "r1")
    item_id = items(connection)[0].id
    connection.execute("INSERT INTO assignments (rater_id, position, task, item_a, item_key, created_at) "
                       "VALUES ('r1', 0, 'rate', ?, ?, 0)", (item_id, item_id))
    connection.execute("INSERT INTO answers (assignment_id, rater_id, likability, novelty, origin, response_ms, "
                       "answered_at) VALUES (1, 'r1', 3, 3, 'human', 10, 0)")
    connection.close()
    with pytest.raises(FileExistsError, match="1 answers"):
        write_study(study, config, image, resolution=32, force=True)


def test_checkpoints_of_different_resolutions_are_refused(tmp_path: Path, fashion_catalogue: Path) -> None:
    import lightning

    from lightning_modules.fashion_can import FashionCAN

    paths = {}
    for resolution in (32, 64):
        module = FashionCAN(resolution=resolution, latent_dim=8, base_channels=8, sample_grid_size=4)
        paths[f"r{resolution}"] = tmp_path / f"r{resolution}.ckpt"
        torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                    "pytorch-lightning_version": lightning.__version__}, paths[f"r{resolution}"])
    config = StudyConfig(catalogue=fashion_catalogue, variants=paths, images_per_variant=2, controls=2)
    with pytest.raises(ValueError, match="one resolution"):
        create_study(config, tmp_path / "study")


def test_checkpoints_with_arbitrary_objects_need_explicit_trust(tmp_path: Path, study: Path) -> None:
    checkpoint = torch.load(json.loads((study / "study.json").read_text())["variants"]["gan"], weights_only=True)
    checkpoint["extra"] = warnings.catch_warnings  # any class: not loadable with weights_only=True
    path = tmp_path / "odd.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="--trust-checkpoints"):
        load_generator(path)
    assert load_generator(path, trust=True).hparams.resolution == 32


def test_copies_of_the_created_study_are_independent(tmp_path: Path, study: Path) -> None:
    copy = copy_study(study, tmp_path / "copy")
    connection = sqlite3.connect(copy / "study.sqlite")
    connection.execute("DELETE FROM items")
    connection.commit()
    connection.close()
    original = open_database(study / "study.sqlite")
    assert len(items(original)) == 24
    original.close()


def test_a_checkpoint_whose_generator_does_not_fit_is_an_error(tmp_path: Path, study: Path) -> None:
    checkpoint = torch.load(json.loads((study / "study.json").read_text())["variants"]["gan"], weights_only=True)
    assert any(name.startswith("classifier.") for name in checkpoint["state_dict"])  # like trained checkpoints
    checkpoint["hyper_parameters"]["base_channels"] = 16  # the saved weights are for 8
    torch.save(checkpoint, tmp_path / "misfit.ckpt")
    with pytest.raises(ValueError, match="do not fit a FashionCAN generator"):
        load_generator(tmp_path / "misfit.ckpt")
