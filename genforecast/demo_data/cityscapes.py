"""Procedural Cityscapes-format video snippets: a stand-in for Cityscapes that runs without any download.

Each snippet is a street seen from a car driving down its right lane at 17 frames per second, as in Cityscapes: a
perspective road with lane markings (and sometimes a zebra crossing), sidewalks with paving, facades with windows
and shop fronts, hedges in the gaps between houses, sky with clouds, trees, poles carrying traffic signs or lights,
and the ego car's bonnet at the bottom. The static scene is ray-cast per pixel (road plane, facade planes), so the
camera's ego-motion yields true perspective flow; textures are anchored in world coordinates so they move with the
scene instead of flickering. Cars ahead drive away or are caught up with, oncoming cars and the odd bus approach
and grow, parked cars line the curb, pedestrians walk along the sidewalks or across the crossing, and a cyclist
(rider on a bicycle) sometimes crosses. Everything is drawn far to near with sub-pixel polygons (``cv2.fillPoly``),
so objects occlude each other by depth, and the same polygons are drawn into the label maps. Sensor noise is added.

Files use the real Cityscapes names and folders (``leftImg8bit_sequence``, ``gtFine``; made-up city names); the
annotated frame is snippet index 19, and odd snippets are annotated at a frame number other than 19 (as in some real
cities) so readers cannot assume it. Instances keep their index ``k`` (``labelId * 1000 + k``) in every frame of a
snippet: they are track ids. ``gtFine_sequence`` (labels of every frame) is a demo-only extra for training the
segmenter; Cityscapes has no such folder. Everything is a pure function of the seed.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import id2label, name2label

from datamodules.cityscapes import ANNOTATED_INDEX, frame_file_name, label_file_name
from metrics.cityscapes_labels import INSTANCE_ID_OFFSET

Colour = tuple[int, int, int]

FPS = 17.0
MOUNT_HEIGHT = 1.3
"""Camera height above the road in metres."""
ROAD_X = (-5.25, 3.75)
"""Lateral extent of the road in metres (camera at 0 in the right lane; oncoming lane left; parking strip right)."""
FACADE_X = (-8.75, 7.25)
"""Lateral positions of the left and right house fronts; the sidewalks lie between them and the road."""
NEAR_Z = 1.5
FAR_Z = 160.0
_TEXTURE_SIZE = 64
_SHIFT = 4
"""Sub-pixel bits of polygon coordinates, so slow motion stays smooth at low resolution."""
_STUFF_DRAW_ORDER = ("sky", "building", "vegetation", "sidewalk", "road")

LABEL_ID: dict[str, int] = {name: name2label[name].id for name in (
    "ego vehicle", "road", "sidewalk", "building", "pole", "traffic light", "traffic sign", "vegetation", "sky",
    "person", "rider", "car", "bus", "bicycle")}

_FACADE_COLOURS: tuple[Colour, ...] = ((196, 178, 150), (170, 160, 150), (150, 90, 70), (210, 200, 180),
                                       (120, 120, 125), (185, 150, 110), (160, 170, 175), (215, 190, 160))
_CAR_COLOURS: tuple[Colour, ...] = ((225, 225, 228), (175, 178, 182), (35, 35, 40), (150, 25, 25), (30, 50, 120),
                                   (70, 75, 80), (20, 80, 60), (200, 190, 160))
_BUS_COLOURS: tuple[Colour, ...] = ((230, 190, 40), (200, 40, 40), (235, 235, 235))
_CLOTHES: tuple[Colour, ...] = ((30, 30, 35), (60, 70, 110), (140, 30, 40), (200, 200, 195), (90, 110, 60),
                                (180, 120, 50), (50, 50, 60), (120, 120, 130))
_SKIN: tuple[Colour, ...] = ((235, 200, 170), (200, 150, 110), (140, 95, 65), (95, 65, 45))


@dataclass(frozen=True)
class Camera:
    """Pinhole camera looking along +z at ``MOUNT_HEIGHT``; focal length as in Cityscapes (about 1.1 x width)."""

    height: int
    width: int

    @property
    def focal(self) -> float:
        return 1.1 * self.width

    @property
    def centre(self) -> tuple[float, float]:
        return self.width / 2, 0.42 * self.height

    def project(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Pixel coordinates (N, 2) of camera-relative points (x right, y up from the road, z ahead)."""
        centre_u, centre_v = self.centre
        return np.stack([centre_u + self.focal * x / z, centre_v - self.focal * (y - MOUNT_HEIGHT) / z], axis=-1)

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel ray slopes ``(dx, dy)``: a ray reaches lateral offset ``dx * z`` and height ``MOUNT_HEIGHT + dy * z``."""
        centre_u, centre_v = self.centre
        rows, columns = np.mgrid[0:self.height, 0:self.width].astype(np.float32) + 0.5
        return (columns - centre_u) / self.focal, (centre_v - rows) / self.focal


class Canvas:
    """The RGB image and label maps of one frame, drawn into together so that pixels and labels always agree.

    When ``collect_outlines`` is set, the full silhouette of every drawn object is also kept (keyed by object) for
    the ``_gtFine_polygons.json`` file.
    """

    def __init__(self, camera: Camera, rgb: np.ndarray, label_ids: np.ndarray, collect_outlines: bool) -> None:
        self.camera = camera
        self.rgb = rgb
        self.label_ids = label_ids
        self.instance_ids = label_ids.astype(np.uint16)
        self.silhouettes: dict[str, tuple[str, np.ndarray]] | None = {} if collect_outlines else None

    def fill(self, polygon: np.ndarray, colour: Sequence[float], label: str, instance: int | None = None,
             key: str | None = None) -> None:
        """Fill a pixel polygon (N, 2) with ``colour`` and ``label`` (an instance index gives ``id * 1000 + k``)."""
        points = [np.round(np.asarray(polygon) * (1 << _SHIFT)).astype(np.int32)]
        label_id = LABEL_ID[label]
        cv2.fillPoly(self.rgb, points, tuple(float(value) for value in colour), shift=_SHIFT)
        cv2.fillPoly(self.label_ids, points, label_id, shift=_SHIFT)
        value = label_id * INSTANCE_ID_OFFSET + instance if instance is not None else label_id
        cv2.fillPoly(self.instance_ids, points, value, shift=_SHIFT)
        if self.silhouettes is not None and key is not None:
            if key not in self.silhouettes:
                self.silhouettes[key] = (label, np.zeros(self.label_ids.shape, dtype=np.uint8))
            cv2.fillPoly(self.silhouettes[key][1], points, 1, shift=_SHIFT)

    def paint(self, polygon: np.ndarray, colour: Sequence[float]) -> None:
        """Paint a detail inside an already filled object: RGB only, labels unchanged."""
        points = [np.round(np.asarray(polygon) * (1 << _SHIFT)).astype(np.int32)]
        cv2.fillPoly(self.rgb, points, tuple(float(value) for value in colour), shift=_SHIFT)

    def billboard(self, x: float, z: float, points: Sequence[tuple[float, float]] | np.ndarray) -> np.ndarray:
        """Pixel polygon of points ``(lateral offset, height)`` in metres on the upright plane at ``(x, z)``."""
        offsets = np.asarray(points, dtype=np.float64)
        return self.camera.project(x + offsets[:, 0], offsets[:, 1], z)

    def shows(self, x: float, z: float, half_width: float) -> bool:
        """Whether an upright object ``2 * half_width`` metres wide at ``(x, z)`` is in front and in the image."""
        if not NEAR_Z < z < FAR_Z:
            return False
        centre_u, _centre_v = self.camera.centre
        left, right = (centre_u + self.camera.focal * (x + offset) / z for offset in (-half_width, half_width))
        return right > 0 and left < self.camera.width


@functools.cache
def _unit_circle(vertices: int) -> np.ndarray:
    angles = np.linspace(0, 2 * math.pi, vertices, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def _circle(centre_a: float, centre_b: float, radius_a: float, radius_b: float | None = None,
            vertices: int = 14) -> np.ndarray:
    """Polygon (vertices, 2) of an ellipse in billboard coordinates."""
    radius_b = radius_a if radius_b is None else radius_b
    return _unit_circle(vertices) * (radius_a, radius_b) + (centre_a, centre_b)


def _rectangle(a0: float, a1: float, b0: float, b1: float) -> list[tuple[float, float]]:
    return [(a0, b0), (a1, b0), (a1, b1), (a0, b1)]


def _limb(start: tuple[float, float], end: tuple[float, float], width: float) -> list[tuple[float, float]]:
    """A quad of ``width`` from ``start`` to ``end`` (arms, legs, frame tubes)."""
    direction = np.subtract(end, start)
    normal = np.array([-direction[1], direction[0]]) / (np.linalg.norm(direction) + 1e-9) * width / 2
    return [tuple(start + normal), tuple(end + normal), tuple(end - normal), tuple(start - normal)]


def _shade(colour: Sequence[float], factor: float) -> Colour:
    return tuple(int(min(255, max(0, value * factor))) for value in colour)


def _pick(rng: np.random.Generator, options: Sequence[Colour]) -> Colour:
    return options[int(rng.integers(len(options)))]


@dataclass(frozen=True)
class VehicleShape:
    """Box dimensions in metres: a lower body and, for cars, a narrower cabin; glass band on bus bodies."""

    label: str
    length: float
    width: float
    body: tuple[float, float]
    cabin_top: float | None
    wheel_radius: float
    glass: tuple[float, float] | None = None


CAR = VehicleShape("car", length=4.3, width=1.8, body=(0.25, 0.95), cabin_top=1.45, wheel_radius=0.32)
BUS = VehicleShape("bus", length=11.5, width=2.5, body=(0.3, 3.1), cabin_top=None, wheel_radius=0.5,
                   glass=(1.2, 2.6))


def _box_corners(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> tuple[np.ndarray, ...]:
    grid = np.array(np.meshgrid([x0, x1], [y0, y1], [z0, z1], indexing="ij")).reshape(3, -1)
    return grid[0], grid[1], grid[2]


@dataclass(frozen=True)
class Vehicle:
    """A car or bus driving along z (``speed`` in m/s in the world); ``facing`` +1 shows its rear, -1 its front."""

    shape: VehicleShape
    instance: int
    x: float
    z: float
    speed: float
    facing: int
    colour: Colour

    def depth(self, time: float, camera_z: float) -> float:
        return self.z + self.speed * time - camera_z

    def draw(self, canvas: Canvas, time: float, camera_z: float) -> None:
        shape, camera = self.shape, canvas.camera
        centre_z = self.depth(time, camera_z)
        near, far = centre_z - shape.length / 2, centre_z + shape.length / 2
        if near < NEAR_Z or near > FAR_Z:
            return
        x0, x1 = self.x - shape.width / 2, self.x + shape.width / 2
        key = f"{shape.label}{self.instance}"

        def fill(polygon: np.ndarray, colour: Sequence[float]) -> None:
            canvas.fill(polygon, colour, shape.label, self.instance, key)

        def hull(*box: float) -> np.ndarray:
            return cv2.convexHull(camera.project(*_box_corners(*box)).astype(np.float32))[:, 0]

        def end_face(xs: tuple[float, float], ys: tuple[float, float], z: float) -> np.ndarray:
            """A rectangle facing the camera (rear or front) at depth ``z``."""
            return camera.project(np.array([xs[0], xs[1], xs[1], xs[0]]), np.array([ys[0], ys[0], ys[1], ys[1]]),
                                  np.full(4, z))

        def side_face(x: float, ys: tuple[float, float], zs: tuple[float, float]) -> np.ndarray:
            """A rectangle on the side plane at lateral offset ``x``."""
            return camera.project(np.full(4, x), np.array([ys[0], ys[1], ys[1], ys[0]]),
                                  np.array([zs[0], zs[0], zs[1], zs[1]]))

        body_bottom, body_top = shape.body
        for wheel_x in (x0 + 0.08, x1 - 0.38):
            fill(end_face((wheel_x, wheel_x + 0.3), (0.0, body_bottom + 0.05), near), (22, 22, 24))
        fill(hull(x0, x1, body_bottom, body_top, near, far), self.colour)
        side_x = x0 if x0 > 0 else x1 if x1 < 0 else None
        if side_x is not None:
            canvas.paint(side_face(side_x, shape.body, (near, far)), _shade(self.colour, 0.72))
        canvas.paint(end_face((x0, x1), shape.body, near), _shade(self.colour, 0.9))
        glass = (52, 60, 70)
        if shape.cabin_top is not None:
            cabin_near = near + (0.22 if self.facing > 0 else 0.32) * shape.length
            cabin_far = far - (0.32 if self.facing > 0 else 0.22) * shape.length
            cx0, cx1 = x0 + 0.12, x1 - 0.12
            fill(hull(cx0, cx1, body_top, shape.cabin_top, cabin_near, cabin_far), self.colour)
            window = (body_top + 0.06, shape.cabin_top - 0.06)
            canvas.paint(end_face((cx0 + 0.1, cx1 - 0.1), window, cabin_near), glass)
            if side_x is not None:
                cabin_side = cx0 if side_x == x0 else cx1
                canvas.paint(side_face(cabin_side, window, (cabin_near + 0.15, cabin_far - 0.15)), glass)
        elif shape.glass is not None:
            canvas.paint(end_face((x0 + 0.15, x1 - 0.15), shape.glass, near), glass)
            if side_x is not None:
                canvas.paint(side_face(side_x, shape.glass, (near + 0.4, far - 0.4)), glass)
        light = (200, 25, 25) if self.facing > 0 else (240, 240, 210)
        light_band = (body_top - 0.25, body_top - 0.1)
        for light_x in ((x0 + 0.08, x0 + 0.35), (x1 - 0.35, x1 - 0.08)):
            canvas.paint(end_face(light_x, light_band, near), light)
        canvas.paint(end_face((self.x - 0.26, self.x + 0.26), (body_bottom + 0.1, body_bottom + 0.22), near),
                     (230, 230, 225))
        if side_x is not None:
            radius = shape.wheel_radius
            for wheel_z in (near + 0.4 + radius, far - 0.4 - radius):
                ring = _circle(wheel_z, radius, radius)
                fill(camera.project(np.full(len(ring), side_x), ring[:, 1], ring[:, 0]), (22, 22, 24))


@dataclass(frozen=True)
class Pedestrian:
    """A walker drawn as an upright figure facing the camera; legs and arms swing with the distance walked."""

    instance: int
    x: float
    z: float
    velocity: tuple[float, float]
    height: float
    skin: Colour
    shirt: Colour
    trousers: Colour
    phase: float

    def position(self, time: float) -> tuple[float, float]:
        return self.x + self.velocity[0] * time, self.z + self.velocity[1] * time

    def depth(self, time: float, camera_z: float) -> float:
        return self.position(time)[1] - camera_z

    def draw(self, canvas: Canvas, time: float, camera_z: float) -> None:
        x, z = self.position(time)
        z -= camera_z
        if not canvas.shows(x, z, 0.4):
            return
        height, key = self.height, f"person{self.instance}"
        speed = math.hypot(*self.velocity)
        swing = math.sin(self.phase + speed * time / 0.7 * math.pi)
        spread = 0.05 + 0.2 * abs(self.velocity[0]) / max(speed, 1e-6)
        hip, shoulder = 0.5 * height, 0.8 * height

        def fill(points: list[tuple[float, float]], colour: Colour) -> None:
            canvas.fill(canvas.billboard(x, z, points), colour, "person", self.instance, key)

        for side in (-1, 1):
            foot = (side * 0.09 + side * swing * spread, 0.06 * max(0.0, side * swing))
            fill(_limb((side * 0.09, hip + 0.05), foot, 0.13), self.trousers)
        fill([(-0.21, shoulder), (0.21, shoulder), (0.17, hip), (-0.17, hip)], self.shirt)
        for side in (-1, 1):
            hand = (side * 0.26 - side * swing * spread * 0.6, 0.47 * height)
            fill(_limb((side * 0.2, shoulder - 0.03), hand, 0.08), self.shirt)
        fill(_circle(0.0, height - 0.12, 0.11, 0.125), self.skin)
        canvas.paint(canvas.billboard(x, z, _circle(0.0, height - 0.07, 0.11, 0.07)), _shade(self.trousers, 0.6))


@dataclass(frozen=True)
class Cyclist:
    """A rider on a bicycle crossing the road, seen from the side: two instances sharing the index ``instance``."""

    instance: int
    x: float
    z: float
    speed: float
    frame_colour: Colour
    jacket: Colour
    skin: Colour

    def depth(self, time: float, camera_z: float) -> float:
        return self.z - camera_z

    def draw(self, canvas: Canvas, time: float, camera_z: float) -> None:
        z = self.z - camera_z
        x, ahead = self.x + self.speed * time, math.copysign(1.0, self.speed)
        if not canvas.shows(x, z, 1.0):
            return
        pedal = abs(self.speed) * time / 0.35

        def fill(points: list[tuple[float, float]], colour: Colour, label: str) -> None:
            mirrored = [(ahead * a, b) for a, b in points]
            canvas.fill(canvas.billboard(x, z, mirrored), colour, label, self.instance, f"{label}{self.instance}")

        for wheel in (-0.55, 0.55):
            fill(_circle(wheel, 0.34, 0.34), (25, 25, 28), "bicycle")
        for start, end in (((-0.55, 0.34), (0.0, 0.36)), ((0.0, 0.36), (0.38, 0.82)), ((-0.2, 0.82), (0.38, 0.82)),
                           ((-0.55, 0.34), (-0.2, 0.82)), ((0.0, 0.36), (-0.22, 0.86)), ((0.55, 0.34), (0.38, 0.9))):
            fill(_limb(start, end, 0.06), self.frame_colour, "bicycle")
        feet = [(0.17 * math.cos(pedal + offset), 0.36 + 0.17 * math.sin(pedal + offset)) for offset in (0, math.pi)]
        for foot in feet:
            fill(_limb((-0.18, 0.95), foot, 0.13), (40, 40, 50), "rider")
        fill([(-0.3, 0.9), (-0.08, 0.9), (0.22, 1.5), (0.0, 1.58)], self.jacket, "rider")
        fill(_limb((0.12, 1.48), (0.38, 0.95), 0.08), self.jacket, "rider")
        fill(_circle(0.16, 1.7, 0.11, 0.125), self.skin, "rider")


@dataclass(frozen=True)
class Tree:
    """A street tree on the sidewalk: trunk and leafy crown, all vegetation."""

    key: str
    x: float
    z: float
    trunk_height: float
    crown_radius: float
    leaf: Colour
    blobs: tuple[tuple[float, float, float, float], ...]

    def depth(self, time: float, camera_z: float) -> float:
        return self.z - camera_z

    def draw(self, canvas: Canvas, time: float, camera_z: float) -> None:
        z = self.z - camera_z
        if not canvas.shows(self.x, z, self.crown_radius):
            return
        crown_b = self.trunk_height + 0.8 * self.crown_radius
        canvas.fill(canvas.billboard(self.x, z, _rectangle(-0.14, 0.14, 0.0, crown_b)), (85, 65, 45), "vegetation",
                    key=self.key)
        canvas.fill(canvas.billboard(self.x, z, _circle(0.0, crown_b, self.crown_radius, 0.9 * self.crown_radius, 18)),
                    self.leaf, "vegetation", key=self.key)
        if canvas.camera.focal * self.crown_radius / z < 3:
            return
        for offset_a, offset_b, radius, brightness in self.blobs:
            blob = _circle(offset_a * self.crown_radius, crown_b + offset_b * self.crown_radius,
                           radius * self.crown_radius, vertices=10)
            canvas.paint(canvas.billboard(self.x, z, blob), _shade(self.leaf, brightness))


@dataclass(frozen=True)
class Pole:
    """A pole at the curb carrying a traffic sign (round, triangular or square) or a traffic light."""

    key: str
    x: float
    z: float
    height: float
    sign: str

    def depth(self, time: float, camera_z: float) -> float:
        return self.z - camera_z

    def draw(self, canvas: Canvas, time: float, camera_z: float) -> None:
        z = self.z - camera_z
        if not canvas.shows(self.x, z, 0.4):
            return
        top = self.height

        def fill(points: list[tuple[float, float]], colour: Colour, label: str) -> None:
            canvas.fill(canvas.billboard(self.x, z, points), colour, label, key=f"{label}{self.key}")

        def paint(points: list[tuple[float, float]], colour: Colour) -> None:
            canvas.paint(canvas.billboard(self.x, z, points), colour)

        fill(_rectangle(-0.06, 0.06, 0.0, top), (150, 150, 150), "pole")
        if self.sign == "light":
            fill(_rectangle(-0.17, 0.17, top - 0.95, top), (35, 35, 38), "traffic light")
            lit = int((self.z * 7) % 2)
            paint(_circle(0.0, top - 0.25 - 0.45 * lit, 0.1, vertices=10), ((230, 40, 30), (60, 220, 90))[lit])
        elif self.sign == "round":
            fill(_circle(0.0, top - 0.3, 0.32), (200, 30, 30), "traffic sign")
            paint(_circle(0.0, top - 0.3, 0.24), (240, 240, 240))
        elif self.sign == "triangle":
            fill([(-0.36, top - 0.05), (0.36, top - 0.05), (0.0, top - 0.65)], (200, 30, 30), "traffic sign")
            paint([(-0.25, top - 0.11), (0.25, top - 0.11), (0.0, top - 0.53)], (240, 240, 240))
        else:
            fill(_rectangle(-0.3, 0.3, top - 0.6, top), (30, 80, 170), "traffic sign")
            paint(_rectangle(-0.05, 0.05, top - 0.5, top - 0.1), (240, 240, 240))


Drawable = Vehicle | Pedestrian | Cyclist | Tree | Pole


@dataclass
class FacadeRow:
    """One side of the street: consecutive houses (or hedges in the gaps) along z, as arrays for pixel lookups."""

    ends: np.ndarray
    starts: np.ndarray
    heights: np.ndarray
    is_hedge: np.ndarray
    colours: np.ndarray
    window_spacing: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, start: float = -40.0, stop: float = 700.0) -> FacadeRow:
        starts, ends, heights, hedges, colours, spacing = [], [], [], [], [], []
        position = start
        while position < stop:
            hedge = rng.random() < 0.15
            length = rng.uniform(6, 14) if hedge else rng.uniform(10, 28)
            starts.append(position)
            ends.append(position + length)
            heights.append(rng.uniform(2.5, 5.0) if hedge else rng.uniform(9, 26))
            hedges.append(hedge)
            colours.append(np.array(_pick(rng, _FACADE_COLOURS)) * rng.uniform(0.85, 1.1))
            spacing.append(rng.uniform(2.3, 3.2))
            position += length
        return cls(np.array(ends), np.array(starts), np.array(heights), np.array(hedges),
                   np.array(colours, dtype=np.float32), np.array(spacing))

    def lookup(self, z: np.ndarray) -> np.ndarray:
        """Index of the house at world positions ``z`` (clamped to the generated stretch)."""
        return np.minimum(np.searchsorted(self.ends, z, side="right"), len(self.ends) - 1)


def _noise_texture(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Tileable value noise in [-1, 1], float32 (64, 64): ``cells`` random values per side, smoothly interpolated."""
    coarse = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    tiled = np.tile(coarse, (3, 3))
    size = _TEXTURE_SIZE
    smooth = cv2.resize(tiled, (3 * size, 3 * size), interpolation=cv2.INTER_CUBIC)[size:2 * size, size:2 * size]
    return np.clip(smooth, -1, 1)


def _sample(texture: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping lookup of a square texture at coordinates in tiles (1.0 = one tile); any array shape."""
    size = texture.shape[0]
    a, b = np.asarray(a, dtype=np.float32) * size, np.asarray(b, dtype=np.float32) * size
    a0, b0 = np.floor(a), np.floor(b)
    fa, fb = a - a0, b - b0
    a0, b0 = a0.astype(np.int64) % size, b0.astype(np.int64) % size
    a1, b1 = (a0 + 1) % size, (b0 + 1) % size
    top = texture[b0, a0] * (1 - fa) + texture[b0, a1] * fa
    bottom = texture[b1, a0] * (1 - fa) + texture[b1, a1] * fa
    return top * (1 - fb) + bottom * fb


@dataclass(frozen=True)
class StreetGeometry:
    """Where each pixel's ray meets the road plane or a facade plane: fixed for a camera moving straight ahead.

    Pixels are flat indices into the (H, W) image. Ground pixels store their lateral offset and distance; the other
    pixels with a lateral component store the distance and height at which they cross their side's facade plane
    (they show that house if it is tall enough there, else sky). ``haze`` is the aerial-perspective blend weight.
    """

    ground: np.ndarray
    ground_x: np.ndarray
    ground_distance: np.ndarray
    ground_haze: np.ndarray
    facade: np.ndarray
    facade_right: np.ndarray
    facade_distance: np.ndarray
    facade_y: np.ndarray
    facade_haze: np.ndarray

    @classmethod
    def of(cls, camera: Camera) -> StreetGeometry:
        dx, dy = (ray.reshape(-1).astype(np.float64) for ray in camera.rays())
        with np.errstate(divide="ignore", invalid="ignore"):
            ground_t = np.where(dy < 0, MOUNT_HEIGHT / -dy, np.inf)
            facade_t = np.where(dx > 0, FACADE_X[1] / dx, np.where(dx < 0, FACADE_X[0] / dx, np.inf))
        ground = np.flatnonzero(ground_t < facade_t)
        facade = np.flatnonzero((ground_t >= facade_t) & np.isfinite(facade_t))
        ground_distance, facade_distance = ground_t[ground], facade_t[facade]
        return cls(ground=ground, ground_x=dx[ground] * ground_distance, ground_distance=ground_distance,
                   ground_haze=_haze(ground_distance), facade=facade, facade_right=dx[facade] > 0,
                   facade_distance=facade_distance, facade_y=MOUNT_HEIGHT + dy[facade] * facade_distance,
                   facade_haze=_haze(facade_distance))


def _haze(distance: np.ndarray) -> np.ndarray:
    return (1 - np.exp(-distance / 220.0))[:, None].astype(np.float32)


_HAZE_COLOUR = np.array([180, 190, 200], dtype=np.float32)


@dataclass
class StreetScene:
    """Everything of one snippet: static street, ego speed and moving objects (world metres, seconds)."""

    camera: Camera
    ego_speed: float
    right: FacadeRow
    left: FacadeRow
    crossing_z: float | None
    textures: dict[str, np.ndarray]
    objects: list[Drawable] = field(default_factory=list)
    exposure: float = 1.0

    def __post_init__(self) -> None:
        self.geometry = StreetGeometry.of(self.camera)
        self.sky_colours = self.sky()

    def render(self, frame: int, noise: np.random.Generator,
               collect_outlines: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        """RGB uint8 (H, W, 3), labelIds uint8 and instanceIds uint16 (H, W) of ``frame``, and polygon objects."""
        time = frame / FPS
        camera_z = self.ego_speed * time
        rgb, label_ids = self._render_street(camera_z)
        canvas = Canvas(self.camera, rgb, label_ids, collect_outlines)
        objects = _stuff_outlines(label_ids) if collect_outlines else []
        for thing in sorted(self.objects, key=lambda thing: -thing.depth(time, camera_z)):
            thing.draw(canvas, time, camera_z)
        _draw_bonnet(canvas)
        if canvas.silhouettes is not None:
            for label, mask in canvas.silhouettes.values():
                objects += _outline_objects(label, mask)
        image = canvas.rgb.astype(np.float32) * self.exposure
        image += noise.normal(0.0, 2.5, size=image.shape).astype(np.float32)
        return np.clip(image, 0, 255).astype(np.uint8), canvas.label_ids, canvas.instance_ids, objects

    def sky(self) -> np.ndarray:
        """The sky behind the street, float32 (H * W, 3): blue gradient with clouds, fixed as it is infinitely far."""
        height, width = self.camera.height, self.camera.width
        rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
        altitude = np.clip((self.camera.centre[1] - rows) / self.camera.centre[1], 0, 1)[..., None]
        clouds = np.clip(_sample(self.textures["clouds"], 1.5 * columns / width, 2.0 * rows / height), 0, 1)
        colour = np.array([200, 214, 228]) * (1 - altitude) + np.array([75, 125, 195]) * altitude
        colour += (245 - colour) * (0.8 * clouds[..., None])
        return colour.reshape(-1, 3).astype(np.float32)

    def _render_street(self, camera_z: float) -> tuple[np.ndarray, np.ndarray]:
        """Colour and label every pixel by what its ray meets first: road plane, a house or hedge, or the sky."""
        geometry, height, width = self.geometry, self.camera.height, self.camera.width
        rgb = self.sky_colours.copy()
        label_ids = np.full(height * width, LABEL_ID["sky"], dtype=np.uint8)

        ground_x, ground_z = geometry.ground_x, camera_z + geometry.ground_distance
        fine = _sample(self.textures["fine"], ground_x / 3, ground_z / 3)
        road = (ground_x >= ROAD_X[0]) & (ground_x <= ROAD_X[1])
        marking = ((np.abs(ground_x + 1.75) < 0.1) & (ground_z % 9 < 3)) | (np.abs(ground_x - 1.75) < 0.07)
        if self.crossing_z is not None:
            marking |= (ground_z >= self.crossing_z) & (ground_z <= self.crossing_z + 4) & (ground_x % 1.0 < 0.5)
        asphalt = np.where(marking, 215 + 10 * fine, 86 + 14 * fine)
        grooves = (ground_x % 0.6 < 0.05) | (ground_z % 0.6 < 0.05)
        curb = (np.abs(ground_x - ROAD_X[1]) < 0.2) | (np.abs(ground_x - ROAD_X[0]) < 0.2)
        paving = np.where(curb, 185.0, np.where(grooves, 120 + 12 * fine, 150 + 12 * fine))
        ground_colour = np.where(road[:, None], np.stack([asphalt, asphalt, asphalt + 4], axis=-1),
                                 paving[:, None] * np.array([1.0, 0.96, 0.92]))
        rgb[geometry.ground] = ground_colour * (1 - geometry.ground_haze) + _HAZE_COLOUR * geometry.ground_haze
        label_ids[geometry.ground] = np.where(road, LABEL_ID["road"], LABEL_ID["sidewalk"])

        facade_z, facade_y = camera_z + geometry.facade_distance, geometry.facade_y
        house = np.where(geometry.facade_right, self.right.lookup(facade_z), self.left.lookup(facade_z))

        def attribute(name: str) -> np.ndarray:
            right, left = getattr(self.right, name), getattr(self.left, name)
            column = (geometry.facade_right[:, None] if right.ndim > 1 else geometry.facade_right)
            return np.where(column, right[np.minimum(house, len(right) - 1)], left[np.minimum(house, len(left) - 1)])

        house_height = attribute("heights")
        wall = facade_y <= house_height
        hedge = attribute("is_hedge")
        along = facade_z - attribute("starts")
        spacing = attribute("window_spacing")
        grain = _sample(self.textures["fine"], along / 4, facade_y / 4)
        facade = attribute("colours") * (np.where(geometry.facade_right, 0.82, 1.0) * (1 + 0.07 * grain))[:, None]
        storey = facade_y % 3.2
        window = ((along % spacing > 0.25 * spacing) & (along % spacing < 0.75 * spacing) & (storey > 1.0)
                  & (storey < 2.3) & (facade_y > 3.2) & (facade_y < house_height - 0.8) & (along > 0.8))
        shop = (facade_y < 2.8) & (along % 6 > 1) & (along % 6 < 5)
        facade = np.where(window[:, None], np.array([55, 65, 80]) + 40 * (storey - 1.0)[:, None], facade)
        facade = np.where(shop[:, None], np.array([45, 50, 55]) + 15 * grain[:, None], facade)
        facade = np.where((facade_y > house_height - 0.45)[:, None], 0.7 * facade, facade)
        leaves = _sample(self.textures["leaves"], along / 2, facade_y / 2)
        facade = np.where(hedge[:, None], np.array([60, 100, 40]) * (1 + 0.4 * leaves[:, None]), facade)
        hazy = facade * (1 - geometry.facade_haze) + _HAZE_COLOUR * geometry.facade_haze
        rgb[geometry.facade[wall]] = hazy[wall]
        label_ids[geometry.facade[wall]] = np.where(hedge[wall], LABEL_ID["vegetation"], LABEL_ID["building"])
        return np.clip(rgb, 0, 255).astype(np.uint8).reshape(height, width, 3), label_ids.reshape(height, width)


def _draw_bonnet(canvas: Canvas) -> None:
    """The ego car's bonnet across the bottom rows (label "ego vehicle", ignored in evaluation)."""
    height, width = canvas.rgb.shape[:2]
    arc = np.linspace(0, 1, 17)
    top = np.stack([arc * width, height * (0.905 + 0.06 * (2 * arc - 1) ** 2)], axis=-1)
    polygon = np.concatenate([top, [[width, height], [0, height]]])
    canvas.fill(polygon, (40, 44, 52), "ego vehicle", key="ego vehicle")
    canvas.paint(np.concatenate([top[4:13], top[12:3:-1] + [0, 0.012 * height]]), (120, 125, 135))


def _outline_objects(label: str, mask: np.ndarray) -> list[dict]:
    """Polygon records (Cityscapes ``objects`` entries) of the outer outlines of a mask."""
    contours, _hierarchy = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [{"label": label, "polygon": contour[:, 0].tolist()} for contour in contours if len(contour) >= 3]


def _stuff_outlines(label_ids: np.ndarray) -> list[dict]:
    """Outlines of the street's stuff regions, far to near, as in the Cityscapes polygon files."""
    objects = []
    for name in _STUFF_DRAW_ORDER:
        objects += _outline_objects(name, (label_ids == LABEL_ID[name]).astype(np.uint8))
    return objects


def _sidewalk_walkers(rng: np.random.Generator) -> list[Pedestrian]:
    """Two to six people walking along either sidewalk, towards or away from the camera."""
    walkers = []
    for offset in range(int(rng.integers(2, 7))):
        right = rng.random() < 0.6
        x = rng.uniform(4.6, 6.6) if right else rng.uniform(-8.3, -6.1)
        walkers.append(_pedestrian(rng, offset, x, rng.uniform(4, 45),
                                   (rng.normal(0, 0.05), rng.choice([-1, 1]) * rng.uniform(1.0, 1.6))))
    return walkers


def _pedestrian(rng: np.random.Generator, instance: int, x: float, z: float,
                velocity: tuple[float, float]) -> Pedestrian:
    return Pedestrian(instance, x, z, velocity, height=rng.uniform(1.55, 1.92), skin=_pick(rng, _SKIN),
                      shirt=_pick(rng, _CLOTHES), trousers=_pick(rng, _CLOTHES), phase=rng.uniform(0, 2 * math.pi))


def _traffic(rng: np.random.Generator, ego_speed: float, duration: float,
             crossing_z: float | None) -> list[Drawable]:
    """Cars ahead, oncoming cars (sometimes a bus), parked cars, walkers and, at a crossing, crossers and a cyclist."""
    cars: list[Drawable] = []

    def add_car(x: float, z: float, speed: float, facing: int) -> None:
        cars.append(Vehicle(CAR, len(cars), x, z, speed, facing, _pick(rng, _CAR_COLOURS)))

    lead_z = rng.uniform(9, 22)
    add_car(rng.normal(0, 0.15), lead_z, max(0.0, ego_speed + rng.uniform(-2, 3)), 1)
    if rng.random() < 0.5:
        add_car(rng.normal(0, 0.15), lead_z + rng.uniform(12, 35), max(0.0, ego_speed + rng.uniform(-1, 4)), 1)
    for z in np.sort(rng.uniform(15, 95, size=int(rng.integers(1, 4)))):
        add_car(-3.5 + rng.normal(0, 0.15), z, -rng.uniform(6, 13), -1)
    parked_z = rng.uniform(3, 8)
    for _ in range(int(rng.integers(2, 6))):
        add_car(2.75, parked_z, 0.0, int(rng.choice([-1, 1])))
        parked_z += rng.uniform(5.5, 14)
    objects: list[Drawable] = list(cars)
    if rng.random() < 0.3:
        objects.append(Vehicle(BUS, 0, -3.5, rng.uniform(40, 90), -rng.uniform(6, 10), -1, _pick(rng, _BUS_COLOURS)))
    walkers = _sidewalk_walkers(rng)
    objects += walkers
    if crossing_z is not None:
        for offset in range(int(rng.integers(1, 3))):
            speed = rng.choice([-1, 1]) * rng.uniform(1.2, 1.6)
            middle = rng.uniform(-4.5, 2.5)
            objects.append(_pedestrian(rng, len(walkers) + offset, middle - speed * duration / 2,
                                       crossing_z + rng.uniform(0.6, 3.4), (speed, 0.0)))
        if rng.random() < 0.6:
            speed = rng.choice([-1, 1]) * rng.uniform(3.5, 5.5)
            objects.append(Cyclist(0, rng.uniform(-4, 1.5) - speed * duration / 2, crossing_z + rng.uniform(0.5, 3.5),
                                   speed, _pick(rng, _CAR_COLOURS), _pick(rng, _CLOTHES), _pick(rng, _SKIN)))
    return objects


def _street_furniture(rng: np.random.Generator) -> list[Drawable]:
    """Trees and poles with signs or lights along both curbs, every 8 to 20 m."""
    furniture: list[Drawable] = []
    for side, (tree_x, pole_x) in enumerate(((4.35, 4.0), (-5.85, -5.55))):
        z = rng.uniform(-5, 8)
        while z < FAR_Z + 30:
            key = f"{side}_{len(furniture)}"
            if rng.random() < 0.65:
                blobs = tuple((rng.uniform(-0.5, 0.5), rng.uniform(-0.4, 0.5), rng.uniform(0.2, 0.4),
                               rng.uniform(0.7, 1.25)) for _ in range(6))
                leaf = (int(rng.integers(45, 80)), int(rng.integers(90, 130)), int(rng.integers(30, 55)))
                furniture.append(Tree(key, tree_x, z, rng.uniform(2.0, 3.0), rng.uniform(1.4, 2.3), leaf, blobs))
            else:
                sign = str(rng.choice(["light", "round", "triangle", "square"]))
                furniture.append(Pole(key, pole_x, z, rng.uniform(3.0, 4.5), sign))
            z += rng.uniform(8, 20)
    return furniture


def random_street(rng: np.random.Generator, camera: Camera, frames: int) -> StreetScene:
    """Draw one snippet's street, ego speed (0 for a stopped car) and traffic."""
    duration = frames / FPS
    ego_speed = 0.0 if rng.random() < 0.25 else rng.uniform(3, 9)
    crossing_z = ego_speed * duration / 2 + rng.uniform(14, 30) if rng.random() < 0.5 else None
    textures = {"fine": _noise_texture(rng, 24), "leaves": _noise_texture(rng, 32), "clouds": _noise_texture(rng, 5)}
    scene = StreetScene(camera, ego_speed, FacadeRow.random(rng), FacadeRow.random(rng), crossing_z, textures,
                        exposure=rng.uniform(0.85, 1.1))
    scene.objects = _street_furniture(rng) + _traffic(rng, ego_speed, duration, crossing_z)
    return scene


def _colourise(label_ids: np.ndarray) -> np.ndarray:
    """RGBA uint8 label colours from the Cityscapes table, as in ``_gtFine_color.png``."""
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[:, 3] = 255
    for label_id, label in id2label.items():
        if 0 <= label_id < 256:
            palette[label_id, :3] = label.color
    return palette[label_ids]


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write RGB(A) or single-channel uint8/uint16 ``image`` as PNG (fast compression)."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"could not write {path}")


# Snippets per split of the demo set. The forecasters' CPU demos overfit 6 training snippets: S2S beat copy-last on
# its training snippets and fell below it on validation; with 18 it generalises. 6 validation snippets make the demo
# tables less dependent on a few objects than 3 did.
DEMO_SEQUENCES_PER_SPLIT = {"train": 18, "val": 6}


def annotated_frame_number(snippet: int) -> int:
    """Frame number of a snippet's annotated frame: 19 for even snippets, a later one for odd snippets."""
    return ANNOTATED_INDEX + (0 if snippet % 2 == 0 else 100 * snippet)


def write_cityscapes_sequences(root: str | Path, cities: Sequence[str] = ("demoville",),
                               sequences_per_split: dict[str, int] | None = None, size: tuple[int, int] = (128, 256),
                               frames_per_snippet: int = 30, annotate_every_frame: bool = True,
                               seed: int = 0) -> Path:
    """Write procedural snippets in the Cityscapes layout under ``root`` and return ``root``.

    For each split (default ``{"train": 18, "val": 6}``) and city, snippet ``k`` is sequence ``k``: its
    ``frames_per_snippet`` frames of ``size`` (height, width) go to ``leftImg8bit_sequence`` and the labels of its
    annotated frame (snippet index 19) to ``gtFine`` (``labelIds``, ``instanceIds``, ``color``, ``polygons``). With
    ``annotate_every_frame`` the labelIds and instanceIds of every frame also go to the demo-only ``gtFine_sequence``.
    """
    if frames_per_snippet <= ANNOTATED_INDEX:
        raise ValueError(f"snippets need more than {ANNOTATED_INDEX} frames to hold the annotated one, "
                         f"got {frames_per_snippet}")
    root = Path(root)
    sequences_per_split = DEMO_SEQUENCES_PER_SPLIT if sequences_per_split is None else sequences_per_split
    camera = Camera(*size)
    for split_number, (split, count) in enumerate(sorted(sequences_per_split.items())):
        for city_number, city in enumerate(cities):
            folders = {name: root / name / split / city for name in ("leftImg8bit_sequence", "gtFine")}
            if annotate_every_frame:
                folders["gtFine_sequence"] = root / "gtFine_sequence" / split / city
            for folder in folders.values():
                folder.mkdir(parents=True, exist_ok=True)
            for snippet in range(count):
                key = [seed, split_number, city_number, snippet]
                scene = random_street(np.random.default_rng(key), camera, frames_per_snippet)
                annotated = annotated_frame_number(snippet)
                for index in range(frames_per_snippet):
                    frame = annotated - ANNOTATED_INDEX + index
                    is_annotated = index == ANNOTATED_INDEX
                    rgb, label_ids, instance_ids, objects = scene.render(
                        index, np.random.default_rng([*key, index]), collect_outlines=is_annotated)
                    _write_png(folders["leftImg8bit_sequence"] / frame_file_name(city, snippet, frame), rgb)
                    label_folders = [folders["gtFine_sequence"]] if annotate_every_frame else []
                    label_folders += [folders["gtFine"]] if is_annotated else []
                    for folder in label_folders:
                        _write_png(folder / label_file_name(city, snippet, frame, "labelIds"), label_ids)
                        _write_png(folder / label_file_name(city, snippet, frame, "instanceIds"), instance_ids)
                    if is_annotated:
                        _write_png(folders["gtFine"] / label_file_name(city, snippet, frame, "color"),
                                   _colourise(label_ids))
                        polygons = {"imgHeight": size[0], "imgWidth": size[1], "objects": objects}
                        (folders["gtFine"] / label_file_name(city, snippet, frame, "polygons")).write_text(
                            json.dumps(polygons))
    return root
