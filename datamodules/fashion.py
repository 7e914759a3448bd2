"""Fashion catalogues (DesIGN, Sbai et al. 2018): product images labelled with a shape and a texture class.

Raw catalogues are converted once (``prepare_data``) into an array cache at the training resolution: every image
is decoded once, padded to a square with white, resized, and stored with its garment mask and labels in one
``.npz`` file (see :mod:`datamodules.cache`). Training then gathers whole batches from in-memory tensors, which
may even live on the GPU. The cache records the resolution and a fingerprint of the catalogue's files, so a
changed catalogue or resolution is rebuilt rather than silently reused.

Two raw layouts are read: the suite's own catalogue layout (below), and the DeepFashion Category & Attribute
benchmark as a public stand-in for the paper's proprietary catalogue, whose 50 categories and texture attributes
are mapped to the paper's 7 shapes and 7 textures by :data:`DEEPFASHION_SHAPES` and :data:`TEXTURE_KEYWORDS`.

Catalogue layout:

"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset

from datamodules.cache import CacheError, read_array_cache, read_cache_meta, write_array_cache
from datamodules.prediction import NamedBatches
from datamodules.sampling import ResumableDataLoader, evaluation_loader, training_loader

log = logging.getLogger(__name__)

SHAPES = ("dress", "skirt", "jacket", "pullover", "t-shirt", "coat", "top")
TEXTURES = ("uniform", "dotted", "animal print", "floral", "striped", "tiled", "graphical")

CATALOGUE_LAYOUT = f"""\
<root>/
  labels.csv       header "image,shape,texture,mask", one row per image; paths relative to <root>
  images/<id>.png  RGB product image on a white background (any size or aspect; any format PIL reads)
  masks/<id>.png   optional L-mode garment mask, 255 = garment, 0 = background, same size as its image;
                   leave the mask column empty to derive the mask from the non-white pixels
  shape:   one of {", ".join(SHAPES)}
  texture: one of {", ".join(TEXTURES)}
"""
__doc__ = (__doc__ or "") + CATALOGUE_LAYOUT

DEEPFASHION_LAYOUT = """\
<root>/
  img/<folder>/<file>.jpg
  Anno/list_category_cloth.txt   count, header, then "<category name> <category type>" (ids: 1-based line order)
  Anno/list_category_img.txt     count, header, then "img/<folder>/<file>.jpg <category id>"
  Anno/list_attr_cloth.txt       count, header, then "<attribute name> <attribute type>" (type 1 = texture)
  Anno/list_attr_img.txt         count, header, then "img/<folder>/<file>.jpg <1 or -1 per attribute>"
  Eval/list_eval_partition.txt   count, header, then "img/<folder>/<file>.jpg <train|val|test>"
"""

DEEPFASHION_SHAPES: dict[str, str] = {
    "Dress": "dress", "Sundress": "dress", "Shirtdress": "dress", "Caftan": "dress", "Kaftan": "dress",
    "Nightdress": "dress",
    "Skirt": "skirt", "Sarong": "skirt",
    "Jacket": "jacket", "Blazer": "jacket", "Bomber": "jacket", "Anorak": "jacket",
    "Sweater": "pullover", "Hoodie": "pullover", "Cardigan": "pullover", "Turtleneck": "pullover",
    "Tee": "t-shirt", "Henley": "t-shirt", "Jersey": "t-shirt",
    "Coat": "coat", "Parka": "coat", "Peacoat": "coat",
    "Top": "top", "Blouse": "top", "Tank": "top", "Halter": "top", "Button-Down": "top", "Flannel": "top",
}
"""DeepFashion category name -> DesIGN shape. Unlisted categories (trousers, shorts, jumpsuits, rompers, robes,
kimonos, capes, ponchos, cover-ups, onesies) have no DesIGN counterpart and their images are left out."""

TEXTURE_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dotted", ("dot",)),
    ("animal print", ("animal", "leopard", "cheetah", "zebra", "snake", "tiger", "giraffe", "croc")),
    ("floral", ("floral", "flower", "botanical", "daisy")),
    ("striped", ("stripe", "chevron", "zigzag")),
    ("tiled", ("check", "plaid", "tartan", "gingham", "houndstooth", "grid", "tile")),
    ("graphical", ("graphic", "print", "logo", "geometric", "abstract")),
)
"""Keyword rules from DeepFashion texture attributes (attribute type 1) to DesIGN textures.

An attribute takes the texture of the first rule with a keyword contained in its lower-cased name (so
"abstract floral" is floral and "leopard print" is animal print, not graphical); texture attributes matching no
rule (e.g. "washed", "knit") name no pattern and are ignored. An image whose positive texture attributes give no
texture is "uniform"; one whose attributes give two different textures is ambiguous and left out.
"""

PREPROCESSING_VERSION = 1
NON_WHITE_THRESHOLD = 240
"""A pixel with some channel below this value is garment when a mask is derived from the image."""
_PROGRESS_EVERY = 500
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class CatalogueEntry:
    """One catalogue image: its path, shape and texture indices (into SHAPES, TEXTURES), and optional mask path."""

    image: Path
    shape: int
    texture: int
    mask: Path | None = None


def _label_index(name: str, allowed: Sequence[str], what: str, where: str) -> int:
    normalised = name.strip().lower()
    if normalised not in allowed:
        raise ValueError(f"{where}: unknown {what} {name!r}; allowed {what}s: {', '.join(allowed)}")
    return allowed.index(normalised)


def read_catalogue(root: str | os.PathLike) -> list[CatalogueEntry]:
    """Read a catalogue in the suite's layout (see :data:`CATALOGUE_LAYOUT`) into entries, in ``labels.csv`` order.

    A missing root or ``labels.csv`` raises ``FileNotFoundError`` describing the expected layout; an unknown shape
    or texture name raises ``ValueError`` naming the csv line and the allowed names. Files are not opened here:
    missing or corrupt images are reported when the cache is built.
    """
    root = Path(root)
    labels = root / "labels.csv"
    if not root.is_dir():
        raise FileNotFoundError(f"catalogue root {root} does not exist; expected layout:\n{CATALOGUE_LAYOUT}")
    if not labels.is_file():
        raise FileNotFoundError(f"catalogue labels {labels} do not exist; expected layout:\n{CATALOGUE_LAYOUT}")
    entries = []
    with labels.open(newline="") as labels_file:
        reader = csv.DictReader(labels_file)
        missing = {"image", "shape", "texture"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{labels}: header lacks the columns {sorted(missing)}; expected layout:\n"
                             f"{CATALOGUE_LAYOUT}")
        for row in reader:
            where = f"{labels}, line {reader.line_num}"
            if not (row["image"] or "").strip():
                raise ValueError(f"{where}: empty image path")
            mask = (row.get("mask") or "").strip()
            entries.append(CatalogueEntry(image=root / row["image"].strip(),
                                          shape=_label_index(row["shape"] or "", SHAPES, "shape", where),
                                          texture=_label_index(row["texture"] or "", TEXTURES, "texture", where),
                                          mask=root / mask if mask else None))
    return entries


def _read_list(path: Path, value_count: int = 1) -> Iterator[tuple[str, list[str]]]:
    """Rows of a DeepFashion list file as ``(name, last value_count tokens)``; names may contain spaces.

    Rows are yielded one at a time: the attribute list has a thousand values per image, far too many to hold.
    """
    if not path.is_file():
        raise FileNotFoundError(f"DeepFashion list {path} does not exist; expected layout:\n{DEEPFASHION_LAYOUT}")
    with path.open() as list_file:
        lines = iter(enumerate(list_file, start=1))
        next(lines, None)
        next(lines, None)
        for line_number, line in lines:
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) <= value_count:
                raise ValueError(f"{path}, line {line_number}: expected a name and {value_count} value(s)")
            yield " ".join(tokens[:-value_count]), tokens[-value_count:]


def texture_of_attribute(attribute_name: str) -> str | None:
    """The DesIGN texture named by a DeepFashion texture attribute, by :data:`TEXTURE_KEYWORDS`, or None."""
    name = attribute_name.lower()
    for texture, keywords in TEXTURE_KEYWORDS:
        if any(keyword in name for keyword in keywords):
            return texture
    return None


def read_deepfashion(root: str | os.PathLike, split: str) -> tuple[list[CatalogueEntry], int]:
    """Read one partition (``train``, ``val``, ``test`` or ``all``) of DeepFashion Category & Attribute as entries.

    Categories map to shapes by :data:`DEEPFASHION_SHAPES` and texture attributes to textures by
    :data:`TEXTURE_KEYWORDS`. Images whose category does not map, whose texture attributes are ambiguous, or that
    lack an attribute row are left out; returns ``(entries, number left out)``. DeepFashion has no masks.
    """
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split must be train, val, test or all, got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"DeepFashion root {root} does not exist; expected layout:\n{DEEPFASHION_LAYOUT}")
    categories = [name for name, _type in _read_list(root / "Anno" / "list_category_cloth.txt")]
    attributes = list(_read_list(root / "Anno" / "list_attr_cloth.txt"))
    texture_columns = {column: texture for column, (name, (kind,)) in enumerate(attributes)
                       if kind == "1" and (texture := texture_of_attribute(name)) is not None}
    positive_textures = {
        name: {texture_columns[column] for column in texture_columns if values[column] == "1"}
        for name, values in _read_list(root / "Anno" / "list_attr_img.txt", len(attributes))
    }
    partition = {name: status for name, (status,) in _read_list(root / "Eval" / "list_eval_partition.txt")}
    entries, left_out = [], 0
    for name, (category_id,) in _read_list(root / "Anno" / "list_category_img.txt"):
        if split != "all" and partition.get(name) != split:
            continue
        if not 1 <= int(category_id) <= len(categories):
            raise ValueError(f"{root / 'Anno' / 'list_category_img.txt'}: {name} has category {category_id}, but "
                             f"list_category_cloth.txt lists {len(categories)} categories")
        shape = DEEPFASHION_SHAPES.get(categories[int(category_id) - 1])
        textures = positive_textures.get(name)
        if shape is None or textures is None or len(textures) > 1:
            left_out += 1
            continue
        texture = next(iter(textures)) if textures else "uniform"
        entries.append(CatalogueEntry(image=root / name, shape=SHAPES.index(shape), texture=TEXTURES.index(texture)))
    return entries, left_out


def _file_signature(path: Path | None) -> str:
    if path is None:
        return "-"
    try:
        status = path.stat()
    except OSError:
        return f"{path}:missing"
    return f"{path}:{status.st_size}:{status.st_mtime_ns}"


def catalogue_cache_meta(entries: Sequence[CatalogueEntry], resolution: int) -> dict[str, Any]:
    """The cache metadata that must match for a cache to be reused: resolution, entry count and a fingerprint.

    The fingerprint hashes every entry's labels and its files' paths, sizes and modification times, so editing,
    adding or relabelling an image invalidates the cache.
    """
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(f"{_file_signature(entry.image)}|{_file_signature(entry.mask)}|{entry.shape}|{entry.texture}\n"
                      .encode())
    return {"kind": "fashion_catalogue", "preprocessing": PREPROCESSING_VERSION, "resolution": resolution,
            "num_entries": len(entries), "fingerprint": digest.hexdigest()}


def _fit_square(image: Image.Image, resolution: int, fill: int | tuple[int, int, int]) -> Image.Image:
    """Pad to a centred square with ``fill`` (keeping the aspect ratio), then resize to ``resolution``."""
    width, height = image.size
    side = max(width, height)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    resample = Image.Resampling.BOX if side >= resolution else Image.Resampling.BICUBIC
    return square.resize((resolution, resolution), resample)


def _open_decoded(path: Path, what: str, draft_size: int | None = None) -> Image.Image:
    """Decode a whole image file; ``draft_size`` lets JPEG decode at a reduced scale still >= that size."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with Image.open(path) as image:
            if draft_size is not None:
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            return image.copy()
    except _DECODE_ERRORS as error:
        raise ValueError(f"cannot decode {what} {path}: {error}") from error


def _load_entry(entry: CatalogueEntry, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode one entry into an (R, R, 3) uint8 image on white and an (R, R) uint8 mask of 0/1."""
    image = _open_decoded(entry.image, "image", draft_size=resolution if entry.mask is None else None)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image.alpha_composite(rgba)
    pixels = np.asarray(_fit_square(image.convert("RGB"), resolution, (255, 255, 255)))
    if entry.mask is None:
        mask = ndimage.binary_fill_holes(pixels.min(axis=2) < NON_WHITE_THRESHOLD)
    else:
        mask_image = _open_decoded(entry.mask, "mask")
        if mask_image.size != image.size:
            raise ValueError(f"mask {entry.mask} is {mask_image.size} but its image {entry.image} is {image.size}")
        mask = np.asarray(_fit_square(mask_image.convert("L"), resolution, 0)) >= 128
    return pixels, mask.astype(np.uint8)


def build_training_cache(entries: Sequence[CatalogueEntry], resolution: int, cache_path: str | os.PathLike,
                         skip_corrupt: bool = False) -> tuple[int, int]:
    """Decode every entry once and write the training cache at ``resolution``; returns ``(written, skipped)``.

    Each image is padded to a white square (keeping its aspect ratio) and resized with area averaging. The cache
    holds ``images`` uint8 (N, 3, R, R), ``masks`` uint8 (N, 1, R, R) with 1 = garment (derived by thresholding
    non-white pixels and filling holes when an entry has no mask), ``shapes`` and ``textures`` int64 (N,), and
    ``entry_index`` int64 (N,) pointing back into ``entries``. A missing or undecodable file raises
    ``FileNotFoundError`` or ``ValueError`` naming it, unless ``skip_corrupt``: then it is skipped with a logged
    warning and counted.
    """
    if not entries:
        raise ValueError("the catalogue has no entries to cache")
    count = len(entries)
    images = np.empty((count, 3, resolution, resolution), dtype=np.uint8)
    masks = np.empty((count, 1, resolution, resolution), dtype=np.uint8)
    kept: list[int] = []
    skipped_paths: list[str] = []
    for index, entry in enumerate(entries):
        try:
            pixels, mask = _load_entry(entry, resolution)
        except (FileNotFoundError, ValueError) as error:
            if not skip_corrupt:
                raise
            log.warning("skipping unreadable catalogue entry: %s", error)
            skipped_paths.append(str(entry.image))
            continue
        images[len(kept)] = pixels.transpose(2, 0, 1)
        masks[len(kept), 0] = mask
        kept.append(index)
        if (index + 1) % _PROGRESS_EVERY == 0:
            log.info("fashion cache: %d/%d images decoded", index + 1, count)
    if not kept:
        raise ValueError(f"none of the {count} catalogue images could be read")
    kept_entries = [entries[index] for index in kept]
    meta = catalogue_cache_meta(entries, resolution) | {"skipped": len(skipped_paths), "skipped_paths": skipped_paths}
    write_array_cache(cache_path, {
        "images": images[:len(kept)],
        "masks": masks[:len(kept)],
        "shapes": np.array([entry.shape for entry in kept_entries], dtype=np.int64),
        "textures": np.array([entry.texture for entry in kept_entries], dtype=np.int64),
        "entry_index": np.array(kept, dtype=np.int64),
    }, meta)
    log.info("fashion cache: wrote %d images at %dpx to %s (%d skipped)", len(kept), resolution, cache_path,
             len(skipped_paths))
    return len(kept), len(skipped_paths)


class CachedCatalogue(Dataset):
    """Catalogue tensors indexed a whole batch at a time, as :class:`ResumableDataLoader` expects.

    ``dataset[indices]`` (a LongTensor) returns ``{"image": uint8 (B, 3, R, R), "mask": uint8 (B, 1, R, R),
    "shape": int64 (B,), "texture": int64 (B,)}`` by one gather per tensor.
    """

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, shapes: torch.Tensor, textures: torch.Tensor):
        if not len(images) == len(masks) == len(shapes) == len(textures):
            raise ValueError("catalogue tensors must have the same length")
        self.images, self.masks, self.shapes, self.textures = images, masks, shapes, textures

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> CachedCatalogue:
        """Wrap the arrays of a cache written by :func:`build_training_cache` (without copying them)."""
        return cls(*(torch.from_numpy(arrays[name]) for name in ("images", "masks", "shapes", "textures")))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        indices = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        return {"image": self.images[indices], "mask": self.masks[indices], "shape": self.shapes[indices],
                "texture": self.textures[indices]}

    def subset(self, indices: torch.Tensor) -> CachedCatalogue:
        """A catalogue holding copies of the given items (used for the train/validation split)."""
        batch = self[indices]
        return CachedCatalogue(batch["image"], batch["mask"], batch["shape"], batch["texture"])

    def to(self, device: torch.device | str) -> CachedCatalogue:
        """A copy whose tensors live on ``device`` (e.g. the whole cache on the GPU for benchmarks)."""
        return CachedCatalogue(self.images.to(device), self.masks.to(device), self.shapes.to(device),
                               self.textures.to(device))


class GenerationRequests(Dataset):
    """``count`` samples to generate, each with a catalogue item (the mask a shape-conditioned GAN paints into).

    ``dataset[indices]`` returns the catalogue's batch (see :class:`CachedCatalogue`) of items ``indices % len(catalogue)``
    plus ``"index"`` int64 (B,), the sample numbers that seed the generator's latents.
    """

    def __init__(self, catalogue: CachedCatalogue, count: int) -> None:
        self.catalogue, self.count = catalogue, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        return self.catalogue[indices % len(self.catalogue)] | {"index": indices.clone()}


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split item indices into sorted ``(train, val)`` index tensors, deterministic given ``seed``.

    ``round(val_fraction * N)`` items (at least one when ``val_fraction > 0``) go to validation, and each label
    gets a share within one item of its proportion: items are shuffled, ranked within their label by
    ``(rank + 0.5) / label count``, and the lowest ranks are taken.
    """
    count = len(labels)
    val_count = 0 if val_fraction <= 0 else min(max(round(val_fraction * count), 1), count - 1)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    shuffled = labels[order]
    relative_rank = torch.empty(count, dtype=torch.float64)
    for label in shuffled.unique():
        positions = (shuffled == label).nonzero().squeeze(1)
        relative_rank[positions] = (torch.arange(len(positions), dtype=torch.float64) + 0.5) / len(positions)
    chosen = torch.zeros(count, dtype=torch.bool)
    chosen[order[torch.sort(relative_rank, stable=True).indices[:val_count]]] = True
    return (~chosen).nonzero().squeeze(1), chosen.nonzero().squeeze(1)


class FashionCatalogueDataModule(L.LightningDataModule):
    """Shape- and texture-labelled garment images with masks, from a catalogue or DeepFashion, via a cache.

    ``prepare_data`` (rank 0) converts the raw catalogue once into ``<cache_dir>/<layout>_<resolution>px.npz``
    and reuses it while its resolution and catalogue fingerprint still match. ``setup`` loads and validates it and
    splits off ``val_fraction`` of the images for validation, stratified by shape and fixed by ``seed``. For
    DeepFashion only the official ``train`` partition is read (its val/test partitions stay unseen).

    Batches are ``{"image": uint8 (B, 3, R, R), "mask": uint8 (B, 1, R, R), "shape": int64, "texture": int64}``.
    They stay uint8 after the device transfer: augmentation belongs to the LightningModule, which draws its jitter
    from its own per-step generator (see :mod:`datamodules.augment`), so this module does not override
    ``on_after_batch_transfer``.

    Prediction (``predict_dataloader``): ``num_samples`` samples to generate, ``batch_size`` at a time (see
    :class:`GenerationRequests`), each with an item of ``predict_split`` (cycled) and named by its zero-padded number.
    """

    def __init__(self, root: str, layout: str = "catalogue", resolution: int = 64, batch_size: int = 64,
                 val_fraction: float = 0.1, cache_dir: str | None = None, skip_corrupt: bool = False,
                 num_workers: int = 0, seed: int = 0, num_samples: int = 64,
                 predict_split: Literal["train", "val"] = "val") -> None:
        super().__init__()
        if layout not in ("catalogue", "deepfashion"):
            raise ValueError(f"layout must be 'catalogue' or 'deepfashion', got {layout!r}")
        if resolution <= 0 or batch_size <= 0:
            raise ValueError(f"resolution and batch_size must be positive, got {resolution} and {batch_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if num_samples <= 0 or predict_split not in ("train", "val"):
            raise ValueError(f"num_samples must be positive and predict_split 'train' or 'val', got {num_samples} and "
                             f"{predict_split!r}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.layout = layout
        self.resolution = resolution
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root / ".genforecast_cache"
        self.skip_corrupt = skip_corrupt
        self.num_workers = num_workers
        self.seed = seed
        self.num_samples = num_samples
        self.predict_split = predict_split
        self.num_shapes = len(SHAPES)
        self.num_textures = len(TEXTURES)
        self.train_set: CachedCatalogue | None = None
        self.val_set: CachedCatalogue | None = None
        self.skipped_images = 0
        self.unmapped_images = 0

    @property
    def cache_path(self) -> Path:
        """The cache file for this layout and resolution."""
        return self.cache_dir / f"{self.layout}_{self.resolution}px.npz"

    def _entries(self) -> tuple[list[CatalogueEntry], int]:
        if self.layout == "deepfashion":
            return read_deepfashion(self.root, "train")
        return read_catalogue(self.root), 0

    def prepare_data(self) -> None:
        """Build the cache unless a valid one for this catalogue and resolution exists (rank 0 only)."""
        entries, _unmapped = self._entries()
        expected = catalogue_cache_meta(entries, self.resolution)
        try:
            meta = read_cache_meta(self.cache_path, expected)
            if meta["skipped"] == 0 or self.skip_corrupt:
                log.info("reusing fashion cache %s", self.cache_path)
                return
            reason = f"{self.cache_path} was built skipping {meta['skipped']} corrupt images but skip_corrupt is off"
        except CacheError as error:
            reason = str(error)
        log.info("building fashion cache (%s)", reason)
        build_training_cache(entries, self.resolution, self.cache_path, skip_corrupt=self.skip_corrupt)

    def setup(self, stage: str | None = None) -> None:
        """Load and validate the cache and split it into ``train_set`` and ``val_set`` (once)."""
        if self.train_set is not None:
            return
        entries, self.unmapped_images = self._entries()
        try:
            arrays, meta = read_array_cache(self.cache_path, catalogue_cache_meta(entries, self.resolution))
        except CacheError as error:
            raise CacheError(f"{error} (prepare_data() builds the cache; the Trainer calls it before setup)") from error
        dataset = CachedCatalogue.from_arrays(arrays)
        self.skipped_images = int(meta["skipped"])
        train_indices, val_indices = stratified_split(dataset.shapes, self.val_fraction, self.seed)
        self.train_set = dataset.subset(train_indices)
        self.val_set = dataset.subset(val_indices) if len(val_indices) else None
        log.info("fashion data: %s", self.describe())

    def _require_setup(self) -> CachedCatalogue:
        if self.train_set is None:
            raise RuntimeError("call prepare_data() and setup() before asking for a dataloader")
        return self.train_set

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled, sharded, resumable batches of the training split (incomplete last batch dropped)."""
        return training_loader(self._require_setup(), self.batch_size, self.seed, self.num_workers, items="images")

    def val_dataloader(self) -> ResumableDataLoader | list:
        """Validation batches in a fixed order, keeping the last partial batch; empty when ``val_fraction`` is 0."""
        self._require_setup()
        if self.val_set is None:
            return []
        return evaluation_loader(self.val_set, self.batch_size, self.num_workers)

    def predict_dataloader(self) -> ResumableDataLoader:
        """The ``num_samples`` generation requests in order, each once (see the class docstring)."""
        train_set = self._require_setup()
        catalogue = train_set if self.predict_split == "train" else self.val_set
        if catalogue is None:
            raise ValueError("predict_split 'val' is empty because val_fraction is 0: set predict_split to 'train'")
        names = [f"{index:06d}" for index in range(self.num_samples)]
        return evaluation_loader(NamedBatches(GenerationRequests(catalogue, self.num_samples), names),
                                 self.batch_size, self.num_workers)

    def describe(self) -> dict[str, Any]:
        """A short summary for experiment logs."""
        return {"root": str(self.root), "layout": self.layout, "resolution": self.resolution,
                "train_images": len(self.train_set) if self.train_set is not None else 0,
                "val_images": len(self.val_set) if self.val_set is not None else 0,
                "skipped_images": self.skipped_images, "unmapped_images": self.unmapped_images,
                "num_shapes": self.num_shapes, "num_textures": self.num_textures}
