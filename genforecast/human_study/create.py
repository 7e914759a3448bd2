"""``human-study create``: generate the designs, draw the controls, score them, and write the study folder.

Study folder (everything a server and a report need; nothing outside it is read after ``create``)::

    <study>/study.json      the resolved study file (absolute paths, every default filled in)
    <study>/manifest.json   every image: id, variant or control, file, sha256, automatic scores, source
    <study>/images/<id>.png the images, named by their random id only (no variant in any name or URL)
    <study>/study.sqlite    the database (items, raters, assignments, answers; see storage.py)
    <study>/secrets.json    cookie-signing key and admin token (mode 600)

Generation: each variant's FashionCAN checkpoint is loaded on the CPU (``weights_only=True`` unless the user
trusts the files), and draws latents from its own seeded ``torch.Generator`` (seeded by the study seed and the
variant name, so adding a variant does not change the others' images); shape-conditioned variants get garment
masks of catalogue images drawn by the same generator. Images identical in every pixel (sha256 of the pixels)
are kept once, across all variants and controls. Controls are real catalogue images at the checkpoints'
resolution, prepared exactly as for training (white square padding, resize), so a control cannot be told apart
by its size or framing.

Automatic scores (with ``classifier``): the nearest-neighbour distance of each generated image to the whole
catalogue in the classifier's 512-d feature space (the suite's novelty metric, per image), and the entropy (nats)
of its shape and texture predictions.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genforecast.human_study.config import CONTROL, StudyConfig
from genforecast.human_study.storage import DATABASE_NAME, Item, initialise, insert_items, set_meta

SECRETS_NAME = "secrets.json"
MANIFEST_NAME = "manifest.json"
CONFIG_NAME = "study.json"
IMAGES_DIR = "images"
GENERATION_BATCH = 64
MAX_DRAWS_PER_IMAGE = 10
"""A variant may draw up to this many times its image count before giving up on finding distinct images."""


@dataclass
class StudyImage:
    """One image to put in a study: (H, W, 3) uint8 pixels, its group, where it came from, its automatic scores."""

    pixels: np.ndarray
    kind: str
    variant: str
    source: str
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256(str(self.pixels.shape).encode())
        digest.update(np.ascontiguousarray(self.pixels).tobytes())
        return digest.hexdigest()


def variant_seed(seed: int, variant: str) -> int:
    """The generation seed of one variant: stable across runs, independent of the other variants."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{variant}".encode()).digest()[:7], "big")


def to_pixels(images: object) -> np.ndarray:
    """(N, 3, H, W) float images in [-1, 1] (a torch tensor) to (N, H, W, 3) uint8."""
    import torch

    assert isinstance(images, torch.Tensor)
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def load_generator(path: Path, trust: bool = False) -> object:
    """A FashionCAN checkpoint on the CPU, in eval mode, without its metric networks (they are not needed here).

    ``weights_only=True`` reads tensors and plain values only; ``trust=True`` allows full unpickling, for
    checkpoints from a source you trust that carry other objects. A checkpoint trained with ``classifier_weights``
    also holds the frozen metric classifier's weights: they are left out (``strict=False``), and the generator's
    weights are then loaded again strictly, so a checkpoint that does not fit the generator is still an error.
    """
    import pickle

    import torch

    from lightning_modules.fashion_can import FashionCAN

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        with warnings.catch_warnings():  # the left-out classifier keys, listed one by one: checked below instead
            warnings.filterwarnings("ignore", message=".*not in the model state dict.*")
            model = FashionCAN.load_from_checkpoint(path, map_location="cpu", weights_only=not trust, strict=False,
                                                    classifier_weights=None, inception_weights=None,
                                                    compile_mode=None)
        state = torch.load(path, map_location="cpu", weights_only=not trust, mmap=True)["state_dict"]
        model.generator.load_state_dict({name.removeprefix("generator."): value for name, value in state.items()
                                         if name.startswith("generator.")}, strict=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} holds objects other than tensors and plain values; if you trust the file, run "
                         f"create with --trust-checkpoints ({error})") from error
    except RuntimeError as error:  # shapes or names that do not match the hyperparameters saved beside them
        raise ValueError(f"{path}: its generator weights do not fit a FashionCAN generator built from its own "
                         f"hyperparameters: {str(error)[:500]}") from error
    return model.eval()


def generate_variant(model: object, variant: str, count: int, seed: int, masks: object | None,
                     seen: set[str]) -> list[StudyImage]:
    """``count`` distinct images of one variant (fewer, with a warning, if the generator keeps repeating itself).

    ``masks`` ((M, 1, R, R) uint8 catalogue masks) feed shape-conditioned generators; ``seen`` holds the hashes of
    images already in the study and is updated.
    """
    import torch

    generator = torch.Generator().manual_seed(variant_seed(seed, variant))
    images: list[StudyImage] = []
    draws = 0
    with torch.no_grad():
        while len(images) < count and draws < MAX_DRAWS_PER_IMAGE * count:
            batch = min(GENERATION_BATCH, count - len(images))
            latent = model.sample_latent(batch, generator)
            batch_masks = None
            if model.conditional:
                index = torch.randint(len(masks), (batch,), generator=generator)
                batch_masks = masks[index].float()
            for offset, pixels in enumerate(to_pixels(model.generate(latent, batch_masks))):
                image = StudyImage(pixels, "generated", variant, f"{variant} draw {draws + offset}")
                if image.sha256 not in seen:
                    seen.add(image.sha256)
                    images.append(image)
            draws += batch
    if len(images) < count:
        warnings.warn(f"variant {variant}: only {len(images)} distinct images in {draws} draws (asked {count})",
                      stacklevel=2)
    return images


def draw_controls(catalogue: object, count: int, seed: int, seen: set[str]) -> list[StudyImage]:
    """``count`` distinct real images drawn at random (seeded) from the catalogue's prepared images."""
    import torch

    order = torch.randperm(len(catalogue.images), generator=torch.Generator().manual_seed(seed))
    controls = []
    for index in order.tolist():
        if len(controls) == count:
            break
        image = StudyImage(catalogue.images[index].permute(1, 2, 0).numpy(), "control", CONTROL,
                           f"catalogue image {index}")
        if image.sha256 not in seen:
            seen.add(image.sha256)
            controls.append(image)
    if len(controls) < count:
        warnings.warn(f"only {len(controls)} distinct catalogue images for {count} controls", stacklevel=2)
    return controls


def score_images(images: list[StudyImage], catalogue: object, classifier_path: Path) -> None:
    """Add ``novelty_nn``, ``shape_entropy`` and ``texture_entropy`` to each generated image's scores."""
    import torch

    from datamodules.augment import to_unit_range
    from datamodules.fashion import SHAPES, TEXTURES
    from metrics.novelty import NearestTrainingDistance
    from networks.classifier import load_exported_classifier

    generated = [image for image in images if image.kind == "generated"]
    if not generated:
        return
    classifier = load_exported_classifier(classifier_path, len(SHAPES), len(TEXTURES))
    with torch.no_grad():
        reference = torch.cat([classifier.features(to_unit_range(chunk)) for chunk in catalogue.images.split(256)])
        novelty = NearestTrainingDistance()
        novelty.set_reference(reference)
        pixels = torch.from_numpy(np.stack([image.pixels for image in generated])).permute(0, 3, 1, 2)
        for start in range(0, len(generated), 256):
            features = classifier.features(to_unit_range(pixels[start:start + 256].contiguous()))
            distances = novelty.nearest_distances(features)
            entropies = [torch.special.entr(head(features).softmax(dim=1)).sum(dim=1)
                         for head in (classifier.shape_head, classifier.texture_head)]
            for offset, image in enumerate(generated[start:start + 256]):
                image.scores = {"novelty_nn": float(distances[offset]), "shape_entropy": float(entropies[0][offset]),
                                "texture_entropy": float(entropies[1][offset])}


def load_catalogue(config: StudyConfig, resolution: int) -> object:
    """Every catalogue image at ``resolution``, prepared as for training (the suite's cached catalogue)."""
    from datamodules.fashion import FashionCatalogueDataModule

    datamodule = FashionCatalogueDataModule(str(config.catalogue), layout=config.catalogue_layout,
                                            resolution=resolution, batch_size=1, val_fraction=0.0, seed=config.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule.train_set


def build_images(config: StudyConfig, trust_checkpoints: bool = False) -> tuple[list[StudyImage], int]:
    """Generate every variant's images, draw the controls and score them; returns ``(images, resolution)``."""
    models = {variant: load_generator(path, trust_checkpoints) for variant, path in config.variants.items()}
    resolutions = {variant: int(model.hparams.resolution) for variant, model in models.items()}
    if len(set(resolutions.values())) != 1:
        # Different sizes would tell raters which images belong together (and controls could match only one).
        raise ValueError(f"all checkpoints of a study must have one resolution, got {resolutions}")
    resolution = next(iter(resolutions.values()))
    catalogue = load_catalogue(config, resolution)
    seen: set[str] = set()
    images: list[StudyImage] = []
    for variant, model in models.items():
        images += generate_variant(model, variant, config.images_per_variant, config.seed, catalogue.masks, seen)
    images += draw_controls(catalogue, config.controls, config.seed, seen)
    if config.classifier is not None:
        score_images(images, catalogue, config.classifier)
    return images, resolution


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def _prepare_folder(out: Path, force: bool) -> None:
    database = out / DATABASE_NAME
    if database.exists():
        connection = sqlite3.connect(database)
        try:
            answers = connection.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        except sqlite3.DatabaseError:
            answers = 0
        finally:
            connection.close()
        if answers:
            raise FileExistsError(f"{out} holds a study with {answers} answers; it is never overwritten "
                                  "(choose another folder)")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} is not empty; pass --force to replace a study that has no answers yet")
        for name in (CONFIG_NAME, MANIFEST_NAME, SECRETS_NAME, DATABASE_NAME, f"{DATABASE_NAME}-wal",
                     f"{DATABASE_NAME}-shm"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / IMAGES_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def write_study(out: str | Path, config: StudyConfig, images: Iterable[StudyImage], resolution: int,
                force: bool = False) -> Path:
    """Write a study folder (see the module docstring) holding ``images``; returns the folder.

    Images are stored under fresh random ids, in random order, with duplicate pixels dropped.
    """
    out = Path(out)
    _prepare_folder(out, force)
    (out / IMAGES_DIR).mkdir()
    from PIL import Image

    items: list[Item] = []
    hashes: set[str] = set()
    for image in images:
        digest = image.sha256
        if digest in hashes:
            continue
        hashes.add(digest)
        item_id = secrets.token_urlsafe(9)
        file = f"{IMAGES_DIR}/{item_id}.png"
        Image.fromarray(image.pixels, "RGB").save(out / file, format="PNG")
        items.append(Item(id=item_id, kind=image.kind, variant=image.variant, file=file, sha256=digest,
                          source=image.source, **image.scores))
    secrets.SystemRandom().shuffle(items)
    connection = initialise(out / DATABASE_NAME)
    try:
        insert_items(connection, items)
        set_meta(connection, {"name": config.name, "resolution": str(resolution)})
    finally:
        connection.close()
    _write_private(out / SECRETS_NAME, json.dumps({"cookie_key": secrets.token_hex(32),
                                                    "admin_token": secrets.token_urlsafe(24)}))
    (out / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=1))
    manifest = {"name": config.name, "resolution": resolution, "seed": config.seed,
                "checkpoints": {variant: str(path) for variant, path in config.variants.items()},
                "items": [item.__dict__ for item in sorted(items, key=lambda item: (item.variant, item.source or ""))]}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    return out


def create_study(config: StudyConfig, out: str | Path, force: bool = False, trust_checkpoints: bool = False) -> Path:
    """Generate, score and write a whole study (the ``create`` command)."""
    out = Path(out)
    _prepare_folder(out, force)  # refuse before spending minutes generating
    images, resolution = build_images(config, trust_checkpoints)
    return write_study(out, config, images, resolution, force=True)
