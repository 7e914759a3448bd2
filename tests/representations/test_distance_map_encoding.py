"""The distance-map representation (hand-worked values, scipy's exact distance transform) and its decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from representations.distance_map_encoding import (
    Track,
    decode_instances,
    encode_frame,
    expand,
    instances_of_frame,
    link_tracks,
)

CAR_TRAIN_ID, CAR_LABEL_ID = 13, 26
PERSON_TRAIN_ID, PERSON_LABEL_ID = 11, 24
ROAD_TRAIN_ID = 0


def _scene(height: int = 12, width: int = 16) -> tuple[np.ndarray, np.ndarray]:
    classes = np.full((height, width), ROAD_TRAIN_ID, dtype=np.uint8)
    instances = np.full((height, width), 7, dtype=np.uint16)  # labelId 7 = road
    return classes, instances


def _paint(classes, instances, rows, columns, train_id, label_id, k):
    classes[rows, columns] = train_id
    instances[rows, columns] = label_id * 1000 + k


def test_square_instance_has_the_hand_worked_profile():
    classes, instances = _scene()
    _paint(classes, instances, slice(2, 7), slice(3, 8), CAR_TRAIN_ID, CAR_LABEL_ID, 1)  # a 5x5 car
    classes[0, 0] = 255
    values = encode_frame(classes, instances, contour_height=1.0, contour_width=3.0)
    # distance to the nearest pixel outside the 5x5 square: 1 on its border, 2 one pixel in, 3 at its centre;
    # value 1 + (1 - (d - 1) / 3): 2, 5/3, 4/3.
    expected_car = np.array([[2, 2, 2, 2, 2],
                             [2, 5 / 3, 5 / 3, 5 / 3, 2],
                             [2, 5 / 3, 4 / 3, 5 / 3, 2],
                             [2, 5 / 3, 5 / 3, 5 / 3, 2],
                             [2, 2, 2, 2, 2]])
    np.testing.assert_allclose(values[2:7, 3:8], expected_car, atol=1e-5)
    assert values[0, 0] == 0  # ignored pixel
    assert values[10, 12] == 1  # road


def test_profile_matches_exact_euclidean_distance_on_random_blobs():
    rng = np.random.default_rng(0)
    classes, instances = _scene(40, 60)
    yy, xx = np.mgrid[:40, :60]
    for k, (cy, cx, r) in enumerate([(12, 15, 7), (25, 40, 9), (30, 12, 5)], start=1):
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2 + rng.integers(0, 5)
        classes[blob] = CAR_TRAIN_ID
        instances[blob] = CAR_LABEL_ID * 1000 + k
    values = encode_frame(classes, instances, contour_height=1.0, contour_width=4.0)
    for k in (1, 2, 3):
        inside = instances == CAR_LABEL_ID * 1000 + k
        distance = distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        expected = 1 + np.clip(1 - (distance - 1) / 4.0, 0, 1)
        np.testing.assert_allclose(values[inside], expected[inside], atol=2e-3)


def test_expand_puts_each_value_on_its_class_map():
    classes = torch.tensor([[[0, 2], [255, 1]]], dtype=torch.uint8)
    values = torch.tensor([[[1.0, 1.5], [0.0, 2.0]]])
    maps = expand(classes, values, 3)
    assert maps.shape == (1, 3, 2, 2)
    expected = torch.zeros(1, 3, 2, 2)
    expected[0, 0, 0, 0], expected[0, 2, 0, 1], expected[0, 1, 1, 1] = 1.0, 1.5, 2.0
    torch.testing.assert_close(maps, expected)


def test_track_extrapolates_a_constant_velocity_exactly():
    track = Track(1, CAR_LABEL_ID, [(0.0, 10.0, 20.0), (1.0, 12.0, 23.0), (2.0, 14.0, 26.0)])
    assert track.position_at(5.0) == pytest.approx((20.0, 35.0))
    assert Track(2, CAR_LABEL_ID, [(3.0, 4.0, 5.0)]).position_at(6.0) == (4.0, 5.0)


def _moving_frames(linking_ids: bool) -> list[np.ndarray]:
    frames = []
    for time in range(4):
        classes, instances = _scene(30, 40)
        first = 1001 if linking_ids else 5 + time  # detections get a new id in every frame
        _paint(classes, instances, slice(5, 9), slice(2 + 2 * time, 6 + 2 * time), CAR_TRAIN_ID, CAR_LABEL_ID,
               first % 1000)
        _paint(classes, instances, slice(20, 24), slice(30 - time, 34 - time), CAR_TRAIN_ID, CAR_LABEL_ID,
               first % 1000 + 1)
        frames.append(instances)
    return frames


def test_centroid_linking_follows_objects_whose_ids_change():
    tracks = link_tracks(_moving_frames(linking_ids=False), "centroids")
    assert len(tracks) == 2
    right, left = sorted(tracks, key=lambda track: track.observations[0][2])
    assert [round(obs[2], 1) for obs in right.observations] == [3.5, 5.5, 7.5, 9.5]
    assert [round(obs[2], 1) for obs in left.observations] == [31.5, 30.5, 29.5, 28.5]
    assert right.position_at(6.0) == pytest.approx((6.5, 15.5))


def test_id_linking_uses_instance_ids_as_track_ids():
    tracks = link_tracks(_moving_frames(linking_ids=True), "ids")
    assert sorted(track.track_id for track in tracks) == [26001, 26002]
    assert all(len(track.observations) == 4 for track in tracks)


def _forecast_maps(classes: np.ndarray, instances: np.ndarray, num_classes: int = 19) -> np.ndarray:
    values = encode_frame(classes, instances)
    return expand(torch.from_numpy(classes), torch.from_numpy(values), num_classes).numpy()


def test_watershed_separates_touching_instances_at_their_contour_ridge():
    classes, instances = _scene(20, 30)
    _paint(classes, instances, slice(5, 15), slice(4, 14), CAR_TRAIN_ID, CAR_LABEL_ID, 1)
    _paint(classes, instances, slice(5, 15), slice(14, 24), CAR_TRAIN_ID, CAR_LABEL_ID, 2)
    forecast = _forecast_maps(classes, instances)
    tracks = [Track(26001, CAR_LABEL_ID, [(0.0, 9.5, 6.0), (1.0, 9.5, 7.0)]),
              Track(26002, CAR_LABEL_ID, [(0.0, 9.5, 21.0), (1.0, 9.5, 20.0)])]
    decoded = decode_instances(forecast, tracks, time=3.0)
    assert sorted(decoded.track_ids.tolist()) == [26001, 26002]
    for track_id, k in ((26001, 1), (26002, 2)):
        mask = decoded.masks[decoded.track_ids.tolist().index(track_id)]
        truth = instances == CAR_LABEL_ID * 1000 + k
        assert (mask & truth).sum() / (mask | truth).sum() > 0.85
    np.testing.assert_allclose(decoded.scores, 1.0)


def test_seeds_leaving_the_view_are_dropped_and_unseeded_objects_are_new():
    classes, instances = _scene(20, 30)
    _paint(classes, instances, slice(4, 10), slice(4, 10), PERSON_TRAIN_ID, PERSON_LABEL_ID, 1)
    forecast = _forecast_maps(classes, instances)
    leaving = Track(24009, PERSON_LABEL_ID, [(0.0, 7.0, 3.0), (1.0, 7.0, -5.0)])
    decoded = decode_instances(forecast, [leaving], time=3.0)
    assert decoded.track_ids.tolist() == [0]
    assert decoded.label_ids.tolist() == [PERSON_LABEL_ID]
    assert decoded.scores.tolist() == [0.5]
    assert decoded.masks[0].sum() == 36


def test_a_seed_in_the_last_half_pixel_of_the_view_stays_on_the_edge():
    classes, instances = _scene(20, 30)
    _paint(classes, instances, slice(14, 20), slice(24, 30), CAR_TRAIN_ID, CAR_LABEL_ID, 1)
    forecast = _forecast_maps(classes, instances)
    at_the_corner = Track(26001, CAR_LABEL_ID, [(0.0, 19.6, 29.6)])  # rounds to (20, 30), past the 20x30 view
    decoded = decode_instances(forecast, [at_the_corner], time=1.0)
    assert decoded.track_ids.tolist() == [26001] and decoded.masks[0].sum() == 36


def test_seed_snaps_onto_its_class_within_the_radius():
    classes, instances = _scene(20, 30)
    _paint(classes, instances, slice(4, 10), slice(4, 10), CAR_TRAIN_ID, CAR_LABEL_ID, 1)
    forecast = _forecast_maps(classes, instances)
    near = Track(26001, CAR_LABEL_ID, [(0.0, 7.0, 14.0)])  # 5 px right of the car
    assert decode_instances(forecast, [near], time=1.0, snap_radius=8).track_ids.tolist() == [26001]
    assert decode_instances(forecast, [near], time=1.0, snap_radius=2).track_ids.tolist() == [0]


def test_copy_baseline_instances_keep_ids_and_score_one():
    classes, instances = _scene()
    _paint(classes, instances, slice(2, 5), slice(2, 5), CAR_TRAIN_ID, CAR_LABEL_ID, 3)
    copied = instances_of_frame(instances)
    assert copied.track_ids.tolist() == [26003]
    assert copied.masks[0].sum() == 9 and copied.scores.tolist() == [1.0]
