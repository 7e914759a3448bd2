"""Procedural fashion catalogues: a stand-in for the DesIGN product images that runs without any download.

Each image is one garment on a white background: one of seven silhouettes (dress, skirt, jacket, pullover,
t-shirt, coat, top) drawn as polygons whose proportions, position and scale vary per image, filled with one of
seven procedural textures (uniform, dots, animal-print blobs, floral rosettes, stripes, tiles/checks, a bold
graphical motif) in a random palette. Everything is a pure function of the seed, so tests and demos are
reproducible, and a 7 x 7 x 4 catalogue at 96 px takes about a second.

Two layouts are written: the suite's own catalogue layout (:func:`write_fashion_catalogue`, read by
``datamodules.fashion.read_catalogue``) and a tiny tree in the DeepFashion Category & Attribute benchmark format
(:func:`write_deepfashion_lists`, read by ``datamodules.fashion.read_deepfashion``) that shows the expected
DeepFashion layout and exercises the label mapping, including images whose labels do not map.
"""

from __future__ import annotations

import colorsys
import csv
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datamodules.fashion import SHAPES, TEXTURES

Point = tuple[float, float]
Colour = np.ndarray

WHITE = (255, 255, 255)


def _jitter(rng: np.random.Generator, value: float, relative: float = 0.1) -> float:
    return value * rng.uniform(1.0 - relative, 1.0 + relative)


def _mirrored(half: list[Point]) -> list[Point]:
    """Close a symmetric outline given its right half, listed from the top centre to the bottom centre."""
    inner = [(-x, y) for x, y in reversed(half) if x != 0.0]
    return half + inner


def _sleeves(sleeve: list[Point]) -> list[list[Point]]:
    return [sleeve, [(-x, y) for x, y in sleeve]]


def _dress(rng: np.random.Generator) -> list[list[Point]]:
    neck, strap, armhole = _jitter(rng, 0.07), _jitter(rng, 0.045), _jitter(rng, 0.16)
    waist, waist_y = _jitter(rng, 0.12), _jitter(rng, 0.34, 0.08)
    hem, length = _jitter(rng, 0.33), _jitter(rng, 0.92, 0.06)
    return [_mirrored([(0.0, _jitter(rng, 0.07)), (neck, 0.0), (neck + strap, 0.0), (armhole, 0.16),
                       (waist, waist_y), (hem, length), (hem * 0.5, length + 0.03), (0.0, length + 0.035)])]


def _skirt(rng: np.random.Generator) -> list[list[Point]]:
    waist, hem, length = _jitter(rng, 0.17), _jitter(rng, 0.34), _jitter(rng, 0.56, 0.08)
    return [_mirrored([(0.0, 0.0), (waist, 0.0), (hem, length), (hem * 0.5, length + 0.025), (0.0, length + 0.03)])]


def _long_sleeved_body(rng: np.random.Generator, neck_depth: float, length: float,
                       hem_flare: float) -> list[list[Point]]:
    neck, shoulder, body = _jitter(rng, 0.085), _jitter(rng, 0.2), _jitter(rng, 0.19)
    sleeve_reach, sleeve_length = _jitter(rng, 0.12, 0.2), _jitter(rng, 0.6, 0.06)
    length = _jitter(rng, length, 0.06)
    torso = _mirrored([(0.0, neck_depth), (neck, 0.0), (shoulder, 0.03), (body, 0.22),
                       (body * hem_flare, length), (0.0, length)])
    sleeve = [(shoulder, 0.03), (shoulder + sleeve_reach, sleeve_length), (shoulder + sleeve_reach - 0.08,
                                                                            sleeve_length + 0.03), (body, 0.22)]
    return [torso, *_sleeves(sleeve)]


def _jacket(rng: np.random.Generator) -> list[list[Point]]:
    return _long_sleeved_body(rng, neck_depth=_jitter(rng, 0.32), length=0.66, hem_flare=1.0)


def _pullover(rng: np.random.Generator) -> list[list[Point]]:
    return _long_sleeved_body(rng, neck_depth=_jitter(rng, 0.06), length=0.66, hem_flare=0.9)


def _coat(rng: np.random.Generator) -> list[list[Point]]:
    return _long_sleeved_body(rng, neck_depth=_jitter(rng, 0.22), length=0.98, hem_flare=1.25)


def _t_shirt(rng: np.random.Generator) -> list[list[Point]]:
    neck, shoulder, body, length = _jitter(rng, 0.09), _jitter(rng, 0.2), _jitter(rng, 0.2), _jitter(rng, 0.62, 0.06)
    reach = _jitter(rng, 0.17, 0.15)
    torso = _mirrored([(0.0, _jitter(rng, 0.07)), (neck, 0.0), (shoulder, 0.03), (body, 0.2), (body, length),
                       (0.0, length)])
    return [torso, *_sleeves([(shoulder, 0.03), (shoulder + reach, 0.17), (shoulder + reach - 0.07, 0.27),
                              (body, 0.2)])]


def _top(rng: np.random.Generator) -> list[list[Point]]:
    neck, strap, body, length = _jitter(rng, 0.07), _jitter(rng, 0.035), _jitter(rng, 0.2), _jitter(rng, 0.5, 0.08)
    scoop = _jitter(rng, 0.15)
    return [_mirrored([(0.0, scoop), (neck * 0.65, scoop * 0.8), (neck * 0.95, scoop * 0.35), (neck, 0.0),
                       (neck + strap, 0.0), (body * 0.95, 0.18), (body, length), (0.0, length + 0.02)])]


SILHOUETTES: dict[str, Callable[[np.random.Generator], list[list[Point]]]] = {
    "dress": _dress, "skirt": _skirt, "jacket": _jacket, "pullover": _pullover, "t-shirt": _t_shirt,
    "coat": _coat, "top": _top,
}


def _draw_mask(polygons: list[list[Point]], size: int, rng: np.random.Generator) -> np.ndarray:
    """Rasterise unit-frame polygons, scaled and shifted at random but kept inside the image; bool (H, W)."""
    points = np.concatenate([np.asarray(polygon) for polygon in polygons])
    low, high = points.min(axis=0), points.max(axis=0)
    extent = float((high - low).max())
    scale = rng.uniform(0.72, 0.92) * size / extent
    half_size = (high - low) * scale / 2
    centre = np.array([size / 2, size / 2]) + rng.uniform(-0.06, 0.06, size=2) * size
    centre = np.clip(centre, half_size + 1, size - half_size - 1)
    offset = centre - (low + high) / 2 * scale
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for polygon in polygons:
        draw.polygon([tuple(point) for point in np.asarray(polygon) * scale + offset], fill=255)
    return np.asarray(mask) > 0


def _colour(rng: np.random.Generator, hue: float | None = None, value: tuple[float, float] = (0.3, 0.9)) -> Colour:
    """A saturated colour, never close to white, so garments stay separable from the background."""
    hue = rng.uniform() if hue is None else hue % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(*value))
    return np.array(rgb) * 255


def _palette(rng: np.random.Generator, count: int) -> list[Colour]:
    """A base colour followed by contrasting accents (hues spread apart, alternating brightness)."""
    base_hue = rng.uniform()
    base_is_light = rng.uniform() < 0.5
    colours = [_colour(rng, base_hue, (0.7, 0.9) if base_is_light else (0.3, 0.55))]
    for index in range(1, count):
        light = (index % 2 == 0) == base_is_light
        colours.append(_colour(rng, base_hue + rng.uniform(0.25, 0.75), (0.7, 0.95) if light else (0.15, 0.45)))
    return colours


def _paint(layers: list[tuple[np.ndarray | None, Colour]], size: int) -> np.ndarray:
    """Paint boolean layers in order over the first colour; (H, W, 3) float."""
    canvas = np.empty((size, size, 3))
    canvas[:] = layers[0][1]
    for selection, colour in layers[1:]:
        canvas[selection] = colour
    return canvas


def _uniform(grid: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, **_: object) -> np.ndarray:
    y, _x = grid
    base = _palette(rng, 1)[0]
    shading = 1.0 - 0.08 * y / y.max()
    return base[None, None, :] * shading[..., None]


def _dotted(grid: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, size: int, **_: object) -> np.ndarray:
    y, x = grid
    spacing = rng.uniform(7, 12) * size / 96
    radius = rng.uniform(0.22, 0.32) * spacing
    y = y + rng.uniform(0, spacing)
    row = np.floor(y / spacing)
    x = x + rng.uniform(0, spacing) + (row % 2) * spacing / 2
    distance = np.hypot((x % spacing) - spacing / 2, (y % spacing) - spacing / 2)
    base, dot = _palette(rng, 2)
    return _paint([(None, base), (distance < radius, dot)], size)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32), mode="F")
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC))


def _animal_print(grid: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, size: int,
                  **_: object) -> np.ndarray:
    noise = _smooth_noise(rng, size, max(size // 6, 4))
    ring_low, ring_high = np.quantile(noise, [0.66, 0.76])
    base, rim, inner = _palette(rng, 3)
    return _paint([(None, base), (noise > ring_low, rim), (noise > ring_high, inner)], size)


def _floral(grid: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, size: int, **_: object) -> np.ndarray:
    y, x = grid
    cell = rng.uniform(14, 22) * size / 96
    cells = int(math.ceil(size / cell)) + 2
    centre_jitter = rng.uniform(-0.12, 0.12, size=(cells, cells, 2)) * cell
    phase = rng.uniform(0, cell, size=2)
    row = np.floor((y + phase[0]) / cell).astype(int)
    column = np.floor((x + phase[1]) / cell).astype(int)
    dy = (y + phase[0]) - (row + 0.5) * cell - centre_jitter[row, column, 0]
    dx = (x + phase[1]) - (column + 0.5) * cell - centre_jitter[row, column, 1]
    radius, angle = np.hypot(dx, dy), np.arctan2(dy, dx)
    petals, rotation = int(rng.integers(5, 8)), rng.uniform(0, 2 * np.pi)
    outer = 0.42 * cell * (0.5 + 0.5 * np.abs(np.cos(petals * (angle + rotation) / 2)))
    base, petal, heart = _palette(rng, 3)
    return _paint([(None, base), (radius < outer, petal), (radius < 0.13 * cell, heart)], size)


def _striped(grid: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, size: int, **_: object) -> np.ndarray:
    y, x = grid
    direction = np.deg2rad(rng.choice([0.0, 90.0, 45.0, 135.0]) + rng.uniform(-5, 5))
    period = rng.uniform(6, 12) * size / 96
    position = (x * np.cos(direction) + y * np.sin(direction)) / period + rng.uniform()
    base, stripe = _palette(rng, 2)
    return _paint([(None, base), (position % 1.0 < rng.uniform(0.35, 0.55), stripe)], size)


def _tiled(grid: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, size: int, **_: object) -> np.ndarray:
    y, x = grid
    if rng.uniform() < 0.5:
        x, y = (x + y) / np.sqrt(2), (x - y) / np.sqrt(2)
    period = rng.uniform(8, 14) * size / 96
    u, v = x / period + rng.uniform(), y / period + rng.uniform()
    checks = (np.floor(u) + np.floor(v)) % 2 == 1
    grout = (u % 1.0 < 0.1) | (v % 1.0 < 0.1)
    base, check, line = _palette(rng, 3)
    return _paint([(None, base), (checks, check), (grout, line)], size)


def _star(centre: np.ndarray, radius: float, rotation: float) -> list[Point]:
    return [(centre[0] + (radius if k % 2 == 0 else 0.42 * radius) * math.cos(rotation + k * math.pi / 5),
             centre[1] + (radius if k % 2 == 0 else 0.42 * radius) * math.sin(rotation + k * math.pi / 5))
            for k in range(10)]


def _graphical(grid: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, size: int, mask: np.ndarray,
               **_: object) -> np.ndarray:
    rows, columns = np.nonzero(mask)
    centre = np.array([columns.mean(), rows.mean()])
    radius = rng.uniform(0.25, 0.35) * max(np.ptp(rows), np.ptp(columns), 1)
    motif = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(motif)
    box = [tuple(centre - radius), tuple(centre + radius)]
    kind = rng.integers(4)
    if kind == 0:
        draw.polygon(_star(centre, radius, rng.uniform(0, 2 * np.pi)), fill=1)
    elif kind == 1:
        draw.ellipse(box, fill=1)
        draw.ellipse([tuple(centre - radius * 0.55), tuple(centre + radius * 0.55)], fill=2)
        draw.ellipse([tuple(centre - radius * 0.25), tuple(centre + radius * 0.25)], fill=1)
    elif kind == 2:
        draw.regular_polygon((float(centre[0]), float(centre[1]), radius), 3, rotation=rng.uniform(0, 120), fill=1)
    else:
        draw.rectangle(box, fill=1)
        draw.regular_polygon((float(centre[0]), float(centre[1]), radius * 0.7), 4, rotation=45, fill=2)
    labels = np.asarray(motif)
    base, primary, secondary = _palette(rng, 3)
    return _paint([(None, base), (labels == 1, primary), (labels == 2, secondary)], size)


TEXTURE_PAINTERS: dict[str, Callable[..., np.ndarray]] = {
    "uniform": _uniform, "dotted": _dotted, "animal print": _animal_print, "floral": _floral,
    "striped": _striped, "tiled": _tiled, "graphical": _graphical,
}


def draw_garment(shape: str, texture: str, size: int, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """Draw one garment of the named shape and texture; returns (RGB image on white, L mask 255/0)."""
    if shape not in SILHOUETTES or texture not in TEXTURE_PAINTERS:
        raise ValueError(f"unknown shape {shape!r} or texture {texture!r}; shapes: {SHAPES}, textures: {TEXTURES}")
    mask = _draw_mask(SILHOUETTES[shape](rng), size, rng)
    grid = np.mgrid[0:size, 0:size].astype(np.float64)
    fabric = TEXTURE_PAINTERS[texture]((grid[0], grid[1]), rng, size=size, mask=mask)
    image = np.full((size, size, 3), 255, dtype=np.uint8)
    image[mask] = np.clip(np.rint(fabric[mask]), 0, 255).astype(np.uint8)
    return Image.fromarray(image, mode="RGB"), Image.fromarray(mask.astype(np.uint8) * 255, mode="L")


def _image_rng(seed: int, *indices: int) -> np.random.Generator:
    """Each image has its own stream, so it does not depend on how many images precede it."""
    return np.random.default_rng([seed, *indices])


def write_fashion_catalogue(root: str | Path, images_per_combination: int = 4, size: int = 96, seed: int = 0,
                            with_masks: bool = True) -> Path:
    """Write a procedural catalogue in the suite's layout (``images/``, ``masks/``, ``labels.csv``) under ``root``.

    Every (shape, texture) pair gets ``images_per_combination`` images of ``size`` x ``size`` pixels. With
    ``with_masks=False`` no masks are written and the ``mask`` column is empty, as for a catalogue whose masks the
    cache builder must derive. Deterministic given ``seed``; returns ``root``.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    if with_masks:
        (root / "masks").mkdir(exist_ok=True)
    rows = []
    for shape_index, shape in enumerate(SHAPES):
        for texture_index, texture in enumerate(TEXTURES):
            for copy in range(images_per_combination):
                image, mask = draw_garment(shape, texture, size, _image_rng(seed, shape_index, texture_index, copy))
                name = f"{len(rows):05d}.png"
                image.save(root / "images" / name)
                mask_path = ""
                if with_masks:
                    mask.save(root / "masks" / name)
                    mask_path = f"masks/{name}"
                rows.append((f"images/{name}", shape, texture, mask_path))
    with (root / "labels.csv").open("w", newline="") as labels:
        writer = csv.writer(labels)
        writer.writerow(("image", "shape", "texture", "mask"))
        writer.writerows(rows)
    return root


DEEPFASHION_CATEGORIES: tuple[tuple[str, int], ...] = (
    ("Anorak", 1), ("Blazer", 1), ("Blouse", 1), ("Bomber", 1), ("Button-Down", 1), ("Cardigan", 1), ("Flannel", 1),
    ("Halter", 1), ("Henley", 1), ("Hoodie", 1), ("Jacket", 1), ("Jersey", 1), ("Parka", 1), ("Peacoat", 1),
    ("Poncho", 1), ("Sweater", 1), ("Tank", 1), ("Tee", 1), ("Top", 1), ("Turtleneck", 1), ("Capris", 2),
    ("Chinos", 2), ("Culottes", 2), ("Cutoffs", 2), ("Gauchos", 2), ("Jeans", 2), ("Jeggings", 2), ("Jodhpurs", 2),
    ("Joggers", 2), ("Leggings", 2), ("Sarong", 2), ("Shorts", 2), ("Skirt", 2), ("Sweatpants", 2),
    ("Sweatshorts", 2), ("Trunks", 2), ("Caftan", 3), ("Cape", 3), ("Coat", 3), ("Coverup", 3), ("Dress", 3),
    ("Jumpsuit", 3), ("Kaftan", 3), ("Kimono", 3), ("Nightdress", 3), ("Onesie", 3), ("Robe", 3), ("Romper", 3),
    ("Shirtdress", 3), ("Sundress", 3),
)
"""The 50 categories of the DeepFashion Category & Attribute benchmark with their type (1 upper, 2 lower, 3 full)."""

# Attribute types: 1 texture, 2 fabric, 3 shape, 4 part, 5 style. "washed" is a type-1 attribute that names no
# pattern; "print trim" names a pattern keyword but is a part attribute, so the adapter must ignore it.
_DEMO_ATTRIBUTES: tuple[tuple[str, int], ...] = (
    ("polka dot", 1), ("leopard print", 1), ("abstract floral", 1), ("striped", 1), ("plaid", 1),
    ("graphic logo", 1), ("washed", 1), ("cotton", 2), ("a-line dress", 3), ("print trim", 4), ("boho", 5),
)
_DEMO_TEXTURE_ATTRIBUTE = {"dotted": "polka dot", "animal print": "leopard print", "floral": "abstract floral",
                           "striped": "striped", "tiled": "plaid", "graphical": "graphic logo"}
# (category, drawn shape) pairs of the demo tree; the last two categories have no shape in the adapter's mapping.
_DEMO_CATEGORIES = (("Dress", "dress"), ("Skirt", "skirt"), ("Blazer", "jacket"), ("Hoodie", "pullover"),
                    ("Tee", "t-shirt"), ("Parka", "coat"), ("Blouse", "top"), ("Jeans", "skirt"),
                    ("Romper", "dress"))


def write_deepfashion_lists(root: str | Path, images_per_category: int = 7, size: int = 96, seed: int = 0) -> Path:
    """Write a tiny tree in the DeepFashion Category & Attribute benchmark layout under ``root``; returns ``root``.

    The layout is ``img/<folder>/<file>.jpg`` plus ``Anno/list_category_cloth.txt``, ``Anno/list_category_img.txt``,
    ``Anno/list_attr_cloth.txt``, ``Anno/list_attr_img.txt`` and ``Eval/list_eval_partition.txt``, each starting
    with a count line and a header line. Images cycle through the textures; their labels include categories that
    do not map to the seven shapes (``Jeans``, ``Romper``) and, every fifth image, two conflicting texture
    attributes, so the adapter's exclusion count can be tested. Images are taller than wide (as in DeepFashion).
    Partition: images cycle train, train, train, val, test.
    """
    root = Path(root)
    category_ids = {name: index + 1 for index, (name, _kind) in enumerate(DEEPFASHION_CATEGORIES)}
    attribute_index = {name: index for index, (name, _kind) in enumerate(_DEMO_ATTRIBUTES)}
    category_rows, attribute_rows, partition_rows = [], [], []
    for category_number, (category, drawn_shape) in enumerate(_DEMO_CATEGORIES):
        folder = root / "img" / f"Demo_{category}"
        folder.mkdir(parents=True, exist_ok=True)
        for copy in range(images_per_category):
            number = len(category_rows)
            texture = TEXTURES[(copy + category_number) % len(TEXTURES)]
            rng = _image_rng(seed, category_number, copy)
            garment, _mask = draw_garment(drawn_shape, texture, size, rng)
            canvas = Image.new("RGB", (size, size * 4 // 3), WHITE)
            canvas.paste(garment, (0, int(rng.integers(0, size // 3 + 1))))
            name = f"img/Demo_{category}/img_{copy:08d}.jpg"
            canvas.save(root / name, quality=92)
            values = [-1] * len(_DEMO_ATTRIBUTES)
            if texture == "uniform":
                values[attribute_index["washed"]] = 1
            else:
                values[attribute_index[_DEMO_TEXTURE_ATTRIBUTE[texture]]] = 1
            if number % 5 == 4:
                for conflicting in _conflicting_attributes(texture):
                    values[attribute_index[conflicting]] = 1
            values[attribute_index["print trim"]] = 1 if number % 3 == 0 else -1
            values[attribute_index["cotton"]] = 1 if number % 2 == 0 else -1
            category_rows.append(f"{name}{' ' * 40}{category_ids[category]}")
            attribute_rows.append(f"{name}  " + " ".join(f"{value:2d}" for value in values))
            partition_rows.append(f"{name}  {('train', 'train', 'train', 'val', 'test')[number % 5]}")
    _write_list(root / "Anno" / "list_category_cloth.txt", "category_name  category_type",
                [f"{name:<28}{kind}" for name, kind in DEEPFASHION_CATEGORIES])
    _write_list(root / "Anno" / "list_category_img.txt", "image_name  category_label", category_rows)
    _write_list(root / "Anno" / "list_attr_cloth.txt", "attribute_name  attribute_type",
                [f"{name:<28}{kind}" for name, kind in _DEMO_ATTRIBUTES])
    _write_list(root / "Anno" / "list_attr_img.txt", "image_name  attribute_labels", attribute_rows)
    _write_list(root / "Eval" / "list_eval_partition.txt", "image_name  evaluation_status", partition_rows)
    return root


def _conflicting_attributes(texture: str) -> tuple[str, ...]:
    """Pattern attributes that, added to an image of ``texture``, give it two texture groups."""
    if texture == "uniform":
        return ("polka dot", "striped")
    return ("polka dot",) if texture == "striped" else ("striped",)


def _write_list(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([str(len(rows)), header, *rows]) + "\n")
