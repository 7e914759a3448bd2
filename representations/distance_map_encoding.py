"""The distance-based scene representation of Couprie, Luc & Verbeek (ECCV Workshops 2018) and its decoding.

**Encoding.** A frame's semantic map (19 Cityscapes trainIds) and instance map (``label_id * 1000 + k``) become
one map per class, ``r_c(x)``:

* ``0`` where the pixel is not of class ``c`` (and for every class on ignored pixels);
* ``1`` inside a region of class ``c`` (stuff classes, and instance classes away from their instances' contours);
* on an instance, ``1 + h * max(0, 1 - (d(x) - 1) / w)``, where ``d(x) >= 1`` is the Euclidean distance from the
  pixel to the nearest pixel outside its instance: ``1 + h`` on the contour, falling linearly to ``1`` at ``w``
  pixels inside (``h`` = :data:`CONTOUR_HEIGHT`, ``w`` = :data:`CONTOUR_WIDTH` at 128x256).

So the argmax over classes is the semantic segmentation, and contours between touching instances of a class are
ridges, which a watershed flooding from one seed per object stops at. The talk's slide ("0 background, 1 inside,
high on contours") fixes the shape but not the profile or its width; ours is written down here and is a
constructor argument of the data module. Because every pixel belongs to at most one class, a frame's
representation is stored as two planes, the class of each pixel and its value (:func:`encode_frame`), and
expanded to ``C`` maps on the device (:func:`expand`): 3 bytes per pixel instead of ``2 C``.

**Decoding** (:func:`decode_instances`), after the talk's overview:

1. objects of the past frames are linked into tracks (:func:`link_tracks`): by their instance id when the ids are
   track ids (annotations), else by the nearest centroid of the same class (detector predictions, frame to frame,
   Hungarian assignment with a gate proportional to the object's size);
2. each track's centroid is extrapolated linearly to the future frame (least squares over its observations);
3. the extrapolated centroids seed a watershed of the forecast's "maxima map" (per pixel, the largest value over
   the moving-object classes, high on forecast contours), restricted to the pixels the forecast labels as a moving
   object; a seed falling outside them snaps to the nearest pixel of its class within ``snap_radius``, else its
   object is taken to have left the view;
4. moving-object regions no seed reaches become new objects with a lower score.

Each forecast instance carries the id of the track it continues (``track_ids``, 0 for new objects): tracking comes
with the forecast for free. Scores (for AP) are the fraction of the region's pixels whose forecast class is the
instance's class, halved for new objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.segmentation import watershed
from torch import Tensor

from metrics.cityscapes_labels import (
    IGNORE_TRAIN_ID,
    INSTANCE_ID_OFFSET,
    INSTANCE_TRAIN_IDS,
    label_id_to_train_id_table,
    train_id_to_label_id_table,
)

CONTOUR_HEIGHT = 1.0
CONTOUR_WIDTH = 3.0
NEW_OBJECT_SCORE_FACTOR = 0.5
TrackLinking = Literal["ids", "centroids"]

_TRAIN_ID_OF_LABEL_ID = label_id_to_train_id_table()
_LABEL_ID_OF_TRAIN_ID = train_id_to_label_id_table()


def encode_frame(classes: np.ndarray, instances: np.ndarray, contour_height: float = CONTOUR_HEIGHT,
                 contour_width: float = CONTOUR_WIDTH) -> np.ndarray:
    """float32 (h, w) representation value of every pixel of one frame (see the module docstring).

    Args:
        classes: (h, w) trainIds, 255 ignored (value 0).
        instances: (h, w) instance ids, ``label_id * 1000 + k`` on instances, anything below 1000 elsewhere.
    """
    if contour_width <= 0:
        raise ValueError(f"contour_width must be positive, got {contour_width}")
    values = (classes != IGNORE_TRAIN_ID).astype(np.float32)
    height, width = classes.shape
    for instance_id in np.unique(instances[instances >= INSTANCE_ID_OFFSET]):
        rows, columns = np.nonzero(instances == instance_id)
        top, bottom = max(rows.min() - 1, 0), min(rows.max() + 2, height)
        left, right = max(columns.min() - 1, 0), min(columns.max() + 2, width)
        inside = instances[top:bottom, left:right] == instance_id
        # The crop keeps a one-pixel margin, so the distance to "outside" is the distance to the instance's contour;
        # cv2.copyMakeBorder pads crops that touch the image border, whose edge also counts as outside.
        padded = cv2.copyMakeBorder(inside.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        ramp = 1.0 + contour_height * np.clip(1.0 - (distance - 1.0) / contour_width, 0.0, 1.0)
        region = values[top:bottom, left:right]
        region[inside] = ramp[inside]
    return values


def expand(classes: Tensor, values: Tensor, num_classes: int) -> Tensor:
    """Per-class maps (..., C, h, w) from the class plane (..., h, w) (255 = no class) and the value plane."""
    known = classes < num_classes
    one_hot = torch.nn.functional.one_hot(torch.where(known, classes, 0).long(), num_classes)
    maps = one_hot.movedim(-1, -3).to(values.dtype) * (values * known)[..., None, :, :]
    return maps


@dataclass
class Track:
    """One object seen in the past frames: its label id and its centroids ``(time, row, column)``."""

    track_id: int
    label_id: int
    observations: list[tuple[float, float, float]] = field(default_factory=list)
    last_area: int = 0

    def position_at(self, time: float) -> tuple[float, float]:
        """Centroid extrapolated to ``time`` by a least-squares line through the observations (constant if one)."""
        times, rows, columns = (np.asarray(values, dtype=np.float64) for values in zip(*self.observations))
        if len(times) == 1 or np.ptp(times) == 0:
            return float(rows[-1]), float(columns[-1])
        row_slope, row_intercept = np.polyfit(times, rows, 1)
        column_slope, column_intercept = np.polyfit(times, columns, 1)
        return float(row_slope * time + row_intercept), float(column_slope * time + column_intercept)


def frame_objects(instances: np.ndarray) -> dict[int, tuple[int, float, float, int]]:
    """``{instance id: (label id, centroid row, centroid column, area)}`` of the evaluated instance classes."""
    objects = {}
    for instance_id in np.unique(instances[instances >= INSTANCE_ID_OFFSET]).tolist():
        label_id = instance_id // INSTANCE_ID_OFFSET
        if _TRAIN_ID_OF_LABEL_ID[min(label_id, 255)] not in INSTANCE_TRAIN_IDS:
            continue
        rows, columns = np.nonzero(instances == instance_id)
        objects[instance_id] = (label_id, float(rows.mean()), float(columns.mean()), len(rows))
    return objects


def link_tracks(frames: Sequence[np.ndarray], linking: TrackLinking = "ids", gate: float = 1.5) -> list[Track]:
    """Tracks of the objects of consecutive instance maps ``frames[0..T-1]`` (times 0..T-1).

    ``"ids"``: the instance id is the track id (annotations). ``"centroids"``: each frame's objects are matched
    to the tracks seen in the previous frame by a Hungarian assignment of centroid distances between objects of
    the same class, a pair being allowed when the distance is at most ``gate * sqrt(area)`` of the track's last
    observation; unmatched objects start new tracks (ids from 1 in order of appearance).
    """
    tracks: dict[int, Track] = {}
    previous: list[int] = []
    for time, instances in enumerate(frames):
        objects = frame_objects(instances)
        if linking == "ids":
            for instance_id, (label_id, row, column, area) in objects.items():
                track = tracks.setdefault(instance_id, Track(instance_id, label_id))
                track.observations.append((float(time), row, column))
                track.last_area = area
            continue
        current = list(objects.values())
        assigned: dict[int, int] = {}
        if previous and current:
            cost = np.full((len(previous), len(current)), np.inf)
            for i, track_id in enumerate(previous):
                track = tracks[track_id]
                _, row, column = track.observations[-1]
                limit = gate * np.sqrt(track.last_area)
                for j, (label_id, new_row, new_column, _area) in enumerate(current):
                    distance = float(np.hypot(new_row - row, new_column - column))
                    if label_id == track.label_id and distance <= limit:
                        cost[i, j] = distance
            finite = np.where(np.isfinite(cost), cost, 1e9)
            for i, j in zip(*linear_sum_assignment(finite)):
                if np.isfinite(cost[i, j]):
                    assigned[j] = previous[i]
        previous = []
        for j, (label_id, row, column, area) in enumerate(current):
            track_id = assigned.get(j) or len(tracks) + 1
            track = tracks.setdefault(track_id, Track(track_id, label_id))
            track.observations.append((float(time), row, column))
            track.last_area = area
            previous.append(track_id)
    return list(tracks.values())


@dataclass
class DecodedInstances:
    """Forecast instances of one frame: masks, label ids, scores and the id of the track each one continues."""

    masks: np.ndarray
    label_ids: np.ndarray
    scores: np.ndarray
    track_ids: np.ndarray

    def as_prediction(self, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """The ``{"masks", "labels", "scores", "track_ids"}`` dict of :class:`metrics.instance_ap.CityscapesInstanceAP`."""
        return {"masks": torch.from_numpy(self.masks).to(device), "labels": torch.from_numpy(self.label_ids).to(device),
                "scores": torch.from_numpy(self.scores).to(device),
                "track_ids": torch.from_numpy(self.track_ids).to(device)}


def _snap(seed: tuple[int, int], allowed: np.ndarray, radius: int) -> tuple[int, int] | None:
    row, column = seed
    if allowed[row, column]:
        return seed
    height, width = allowed.shape
    top, left = max(row - radius, 0), max(column - radius, 0)
    window = allowed[top:min(row + radius + 1, height), left:min(column + radius + 1, width)]
    candidates = np.argwhere(window)
    if len(candidates) == 0:
        return None
    distances = np.hypot(candidates[:, 0] + top - row, candidates[:, 1] + left - column)
    best = candidates[distances.argmin()]
    if distances.min() > radius:
        return None
    return int(best[0] + top), int(best[1] + left)


def decode_instances(forecast: np.ndarray, tracks: Sequence[Track], time: float, snap_radius: int = 8,
                     min_new_object_area: int = 10) -> DecodedInstances:
    """Future instances from a forecast representation (C, h, w) and the past tracks (see the module docstring).

    ``time`` is the forecast frame's time in the tracks' clock (inputs at 0..T-1, so ``T - 1 + steps``).
    """
    num_classes, height, width = forecast.shape
    semantic = forecast.argmax(axis=0)
    moving_ids = [train_id for train_id in INSTANCE_TRAIN_IDS if train_id < num_classes]
    moving = np.isin(semantic, moving_ids) & (forecast.max(axis=0) > 0.5)
    maxima = forecast[moving_ids].max(axis=0)
    markers = np.zeros((height, width), dtype=np.int32)
    seeded: list[Track] = []
    for track in tracks:
        row, column = track.position_at(time)
        if not (0 <= row < height and 0 <= column < width):
            continue
        train_id = int(_TRAIN_ID_OF_LABEL_ID[min(track.label_id, 255)])
        # A centroid in the last half pixel of the view rounds onto the pixel past it: keep it on the edge pixel.
        pixel = (min(int(round(row)), height - 1), min(int(round(column)), width - 1))
        seed = _snap(pixel, moving & (semantic == train_id) & (markers == 0), snap_radius)
        if seed is None:
            continue
        seeded.append(track)
        markers[seed] = len(seeded)
    regions = watershed(maxima, markers, mask=moving) if seeded else np.zeros_like(markers)
    masks, label_ids, scores, track_ids = [], [], [], []
    for number, track in enumerate(seeded, start=1):
        region = regions == number
        train_id = _TRAIN_ID_OF_LABEL_ID[min(track.label_id, 255)]
        agreement = float((semantic[region] == train_id).mean()) if region.any() else 0.0
        if agreement > 0:
            masks.append(region)
            label_ids.append(track.label_id)
            scores.append(agreement)
            track_ids.append(track.track_id)
    unreached = moving & (regions == 0)
    for train_id in moving_ids:
        count, components = cv2.connectedComponents((unreached & (semantic == train_id)).astype(np.uint8), 8)
        for component in range(1, count):
            region = components == component
            if region.sum() >= min_new_object_area:
                masks.append(region)
                label_ids.append(int(_LABEL_ID_OF_TRAIN_ID[train_id]))
                scores.append(NEW_OBJECT_SCORE_FACTOR)
                track_ids.append(0)
    return DecodedInstances(
        masks=np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool),
        label_ids=np.asarray(label_ids, dtype=np.int64), scores=np.asarray(scores, dtype=np.float32),
        track_ids=np.asarray(track_ids, dtype=np.int64))


def instances_of_frame(instances: np.ndarray) -> DecodedInstances:
    """The evaluated instances of an instance map as predictions with score 1 (the copy-last baseline)."""
    objects = frame_objects(instances)
    height, width = instances.shape
    ids = list(objects)
    return DecodedInstances(
        masks=np.stack([instances == instance_id for instance_id in ids]) if ids else np.zeros((0, height, width),
                                                                                                 dtype=bool),
        label_ids=np.asarray([objects[instance_id][0] for instance_id in ids], dtype=np.int64),
        scores=np.ones(len(ids), dtype=np.float32), track_ids=np.asarray(ids, dtype=np.int64))
