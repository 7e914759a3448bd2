from __future__ import annotations

import functools
import importlib
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapes_reference import INSTANCE_EVALUATOR, InstancePrediction, official_instance_ap
from cityscapesscripts.helpers.labels import name2label

from genforecast.bench.eval import prediction_tensors, synthetic_detections, synthetic_street
from metrics import instance_ap
from metrics.cityscapes_labels import INSTANCE_CLASS_NAMES, INSTANCE_LABEL_IDS
from metrics.instance_ap import CityscapesInstanceAP, average_precision, label_areas, mask_label_counts

HEIGHT, WIDTH = 64, 128
ROAD, SKY, BUILDING, UNLABELED, STATIC = (
    name2label[name].id for name in ("road", "sky", "building", "unlabeled", "static")
)
CARAVAN, CAR, PERSON, BUS, TRAIN = (name2label[name].id for name in ("caravan", "car", "person", "bus", "train"))


def _region(rng: np.random.Generator, max_height: int, max_width: int, min_size: int = 3) -> np.ndarray:
    """A random rectangle or ellipse mask."""
    height, width = rng.integers(min_size, max_height + 1), rng.integers(min_size, max_width + 1)
    top, left = rng.integers(0, HEIGHT - height + 1), rng.integers(0, WIDTH - width + 1)
    rows, columns = np.mgrid[:HEIGHT, :WIDTH]
    if rng.random() < 0.5:
        return (rows >= top) & (rows < top + height) & (columns >= left) & (columns < left + width)
    center_row, center_column = top + (height - 1) / 2, left + (width - 1) / 2
    return ((rows - center_row) / (height / 2)) ** 2 + ((columns - center_column) / (width / 2)) ** 2 <= 1


def _shifted(mask: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """``mask`` moved by (rows, columns) pixels, zero-filled."""
    moved = np.zeros_like(mask)
    source = mask[max(-rows, 0) : HEIGHT - max(rows, 0), max(-columns, 0) : WIDTH - max(columns, 0)]
    moved[max(rows, 0) : max(rows, 0) + source.shape[0], max(columns, 0) : max(columns, 0) + source.shape[1]] = source
    return moved


def _ground_truth(rng: np.random.Generator) -> np.ndarray:
    """Instance-id map: stuff background, void bands, instances (some tiny), crowd regions, a caravan."""
    instance_map = np.full((HEIGHT, WIDTH), ROAD, dtype=np.int64)
    instance_map[:12] = SKY
    instance_map[12:24, : rng.integers(20, 100)] = BUILDING
    instance_map[-4:] = UNLABELED
    next_instance = dict.fromkeys(INSTANCE_LABEL_IDS + (CARAVAN,), 0)
    for _ in range(rng.integers(6, 12)):
        label_id = int(rng.choice(INSTANCE_LABEL_IDS))
        tiny = rng.random() < 0.2
        region = _region(rng, 9, 11) if tiny else _region(rng, 30, 40, min_size=8)
        instance_map[region] = label_id * 1000 + next_instance[label_id]
        next_instance[label_id] += 1
    for _ in range(rng.integers(1, 3)):
        instance_map[_region(rng, 16, 24, min_size=6)] = int(rng.choice(INSTANCE_LABEL_IDS))
    instance_map[_region(rng, 10, 14, min_size=6)] = CARAVAN * 1000
    instance_map[_region(rng, 10, 14, min_size=6)] = CARAVAN
    instance_map[_region(rng, 8, 30, min_size=4)] = STATIC
    return instance_map


def _predictions(rng: np.random.Generator, instance_map: np.ndarray) -> list[InstancePrediction]:
    """Ground truth perturbed: shifted masks, misses, duplicates, wrong classes, false positives, ties."""

    def score() -> float:
        return round(float(rng.random()), 1) if rng.random() < 0.3 else float(rng.random())

    predictions: list[InstancePrediction] = []
    for segment_id in np.unique(instance_map):
        label_id = int(segment_id // 1000 if segment_id >= 1000 else segment_id)
        if label_id not in INSTANCE_LABEL_IDS or rng.random() < 0.15:
            continue
        for _ in range(2 if rng.random() < 0.25 else 1):
            mask = _shifted(instance_map == segment_id, *rng.integers(-3, 4, size=2))
            if rng.random() < 0.3:
                mask &= _shifted(mask, *rng.integers(-4, 5, size=2))
            predicted_label = int(rng.choice(INSTANCE_LABEL_IDS)) if rng.random() < 0.1 else label_id
            predictions.append((mask, predicted_label, score()))
    for _ in range(rng.integers(2, 5)):
        tiny = rng.random() < 0.3
        region = _region(rng, 8, 10) if tiny else _region(rng, 24, 30, min_size=6)
        predictions.append((region, int(rng.choice(INSTANCE_LABEL_IDS)), score()))
    predictions.append((np.zeros((HEIGHT, WIDTH), dtype=bool), CAR, 0.5))
    predictions.append((_region(rng, 20, 20), ROAD, 0.9))
    rng.shuffle(predictions)
    return predictions


def _dataset(seed: int, num_images: int = 6) -> tuple[list[list[InstancePrediction]], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    targets = [_ground_truth(rng) for _ in range(num_images)]
    return [_predictions(rng, target) for target in targets], targets


def _as_tensors(image_predictions: list[InstancePrediction]) -> dict[str, torch.Tensor]:
    if not image_predictions:
        return {
            "masks": torch.zeros(0, HEIGHT, WIDTH, dtype=torch.bool),
            "labels": torch.zeros(0, dtype=torch.long),
            "scores": torch.zeros(0, dtype=torch.float64),
        }
    masks, labels, scores = zip(*image_predictions)
    return {
        "masks": torch.from_numpy(np.stack(masks)),
        "labels": torch.tensor(labels),
        "scores": torch.tensor(scores, dtype=torch.float64),
    }


def _metric_result(
    predictions: list[list[InstancePrediction]], targets: list[np.ndarray], **kwargs: int
) -> dict[str, torch.Tensor]:
    metric = CityscapesInstanceAP(**kwargs)
    metric.update([_as_tensors(p) for p in predictions], [torch.from_numpy(t) for t in targets])
    return metric.compute()


def _assert_matches_official(result: dict[str, torch.Tensor], official: dict, tolerance: float = 1e-9) -> None:
    for key in ("ap_per_class", "ap50_per_class"):
        expected = [official[key][name] for name in INSTANCE_CLASS_NAMES]
        np.testing.assert_allclose(result[key].numpy(), expected, rtol=0, atol=tolerance, equal_nan=True)
    for key in ("ap", "ap50"):
        assert result[key].item() == pytest.approx(official[key], abs=tolerance, nan_ok=True)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_official_evaluator(seed: int, tmp_path: Path) -> None:
    predictions, targets = _dataset(seed)
    official = official_instance_ap(predictions, targets, tmp_path)
    result = _metric_result(predictions, targets)
    _assert_matches_official(result, official)
    assert 0 < result["ap"].item() < result["ap50"].item() < 1


def test_reference_shims_are_undone(tmp_path: Path) -> None:
    """The official run leaves numpy, the working directory, the environment and site-packages as they were."""
    had_in1d, working_directory, environment = hasattr(np, "in1d"), os.getcwd(), dict(os.environ)
    predictions, targets = _dataset(9, num_images=2)
    official_instance_ap(predictions, targets, tmp_path)
    assert hasattr(np, "in1d") == had_in1d
    assert os.getcwd() == working_directory and dict(os.environ) == environment
    assert (tmp_path / "matches.json").is_file() and (tmp_path / "gtInstances.json").is_file()
    module_directory = Path(importlib.import_module(INSTANCE_EVALUATOR).__file__).parent
    assert not (module_directory / "gtInstances.json").exists()


def test_matches_official_evaluator_with_other_min_region_size(tmp_path: Path) -> None:
    predictions, targets = _dataset(4)
    official = official_instance_ap(predictions, targets, tmp_path, min_region_size=300)
    _assert_matches_official(_metric_result(predictions, targets, min_region_size=300), official)


def test_classes_without_ground_truth_or_predictions(tmp_path: Path) -> None:
    """A class with predictions only has AP NaN (left out of the mean); one with ground truth only has AP 0."""
    target = np.full((HEIGHT, WIDTH), ROAD, dtype=np.int64)
    car, bus, train = (np.zeros((HEIGHT, WIDTH), dtype=bool) for _ in range(3))
    car[30:50, 60:110], bus[2:22, 60:100], train[40:60, 5:40] = True, True, True
    target[car], target[train] = CAR * 1000, TRAIN * 1000
    predictions = [[(car, CAR, 0.7), (bus, BUS, 0.9), (_shifted(car, 1, 2), PERSON, 0.4)]]
    official = official_instance_ap(predictions, [target], tmp_path)
    result = _metric_result(predictions, [target])
    _assert_matches_official(result, official)
    per_class = dict(zip(INSTANCE_CLASS_NAMES, result["ap_per_class"].tolist()))
    assert per_class["car"] == 1.0 and per_class["train"] == 0.0
    assert math.isnan(per_class["bus"]) and math.isnan(per_class["person"])
    assert result["ap"].item() == pytest.approx(0.5)


def test_only_ignored_predictions_give_zero_where_the_official_script_crashes() -> None:
    """Ground truth and predictions of a class, but every prediction lies on a crowd region: AP 0 (official: crash)."""
    target = np.full((HEIGHT, WIDTH), ROAD, dtype=np.int64)
    target[0:20, 0:20] = CAR * 1000
    target[30:60, 50:100] = CAR
    crowd = target == CAR
    result = _metric_result([[(crowd, CAR, 0.8)]], [target])
    assert result["ap_per_class"][INSTANCE_LABEL_IDS.index(CAR)].item() == 0.0


def test_perfect_predictions_give_one() -> None:
    _, targets = _dataset(6, num_images=3)
    predictions = [
        [(target == segment_id, int(segment_id // 1000), 0.5) for segment_id in np.unique(target) if segment_id >= 1000]
        for target in targets
    ]
    result = _metric_result(predictions, targets)
    defined = result["ap_per_class"][~result["ap_per_class"].isnan()]
    assert torch.all(defined == 1.0) and result["ap"].item() == 1.0


def test_average_precision_of_a_small_curve() -> None:
    """Scores 0.9 (TP), 0.8 (FP), 0.7 (TP) against 4 instances: points (r, p) = (0, 1), (1/4, 1), (1/4, 1/2),
    (1/2, 2/3); weights (r_next - r_prev) / 2 = 1/8, 1/8, 1/8, 1/8."""
    scores = np.array([0.8, 0.7, 0.9])
    value = average_precision(scores, np.array([False, True, True]), num_ground_truth=4)
    assert value == pytest.approx((1 + 1 + 1 / 2 + 2 / 3) / 8)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_merging_two_ranks_matches_single_pass() -> None:
    predictions, targets = _dataset(7)
    single = _metric_result(predictions, targets)
    ranks = [CityscapesInstanceAP(), CityscapesInstanceAP()]
    for index, (image_predictions, target) in enumerate(zip(predictions, targets)):
        ranks[index % 2].update([_as_tensors(image_predictions)], [torch.from_numpy(target)])
    merged = CityscapesInstanceAP()
    merged.merge_state(ranks[1])
    merged.merge_state(ranks[0])
    result = merged.compute()
    for key, value in single.items():
        torch.testing.assert_close(result[key], value, equal_nan=True, rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_images_without_predictions_and_empty_metric() -> None:
    _, targets = _dataset(8, num_images=2)
    result = _metric_result([[], []], targets)
    defined = result["ap_per_class"][~result["ap_per_class"].isnan()]
    assert defined.numel() > 0 and torch.all(defined == 0)
    assert CityscapesInstanceAP().compute()["ap"].isnan()


def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match=r"\[0.5, 1\)"):
        CityscapesInstanceAP(overlaps=[0.3, 0.5])
    with pytest.raises(ValueError, match="0.5"):
        CityscapesInstanceAP(overlaps=[0.75])
    metric = CityscapesInstanceAP()
    with pytest.raises(ValueError, match="finite"):
        metric.update(
            [
                {
                    "masks": torch.ones(1, 4, 4, dtype=torch.bool),
                    "labels": torch.tensor([CAR]),
                    "scores": torch.tensor([math.nan]),
                }
            ],
            [torch.zeros(4, 4, dtype=torch.long)],
        )


def test_speed_sanity_on_cpu() -> None:
    """50 images at 256x512 with 20 masks each (no timing assertion: prints the time).

    Each 50x60 object is predicted 2 rows low, an IoU of 48 x 60 / (52 x 60) = 0.923: a match at the overlaps 0.5 ..
    0.9, none at 0.95, whatever the scores. So AP50 is 1 and AP, the mean over the 10 overlaps, 0.9.
    """
    generator = torch.Generator().manual_seed(0)
    metric = CityscapesInstanceAP()
    label_ids = torch.tensor(INSTANCE_LABEL_IDS)
    start = time.perf_counter()
    for _ in range(50):
        target = torch.full((256, 512), ROAD, dtype=torch.long)
        masks = torch.zeros(20, 256, 512, dtype=torch.bool)
        labels = label_ids[torch.randint(0, len(label_ids), (20,), generator=generator)]
        for index in range(20):  # one object per cell of a 4 x 5 grid of 64 x 100 cells: no two overlap
            top = 64 * (index // 5) + int(torch.randint(0, 10, (1,), generator=generator))
            left = 100 * (index % 5) + int(torch.randint(0, 38, (1,), generator=generator))
            target[top : top + 50, left : left + 60] = labels[index] * 1000 + index
            masks[index, top + 2 : top + 52, left : left + 60] = True
        metric.update([{"masks": masks, "labels": labels, "scores": torch.rand(20, generator=generator)}], [target])
    result = metric.compute()
    print(f"instance AP on 50 images of 256x512 with 20 masks each: {time.perf_counter() - start:.2f} s")
    assert result["ap50"].item() == pytest.approx(1.0) and result["ap"].item() == pytest.approx(0.9)


# Fast paths (mask_label_counts) against dense products and against the official evaluator.


def _dense_counts(masks: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    one_hot = torch.nn.functional.one_hot(labels.long(), num_labels)
    return torch.einsum("nhw,hwc->nc", masks.long(), one_hot)


@pytest.mark.parametrize("strategy", ["boxes", "nonzero"])
@pytest.mark.parametrize("shape", [(40, 96), (37, 203), (1, 8), (64, 8)])
def test_mask_label_counts_equal_dense_products(strategy: str, shape: tuple[int, int]) -> None:
    """Word-aligned and odd widths (the boxes' word view and its fallback), masks touching every border, full, empty
    and single-pixel masks, a non-contiguous mask stack."""
    generator = torch.Generator().manual_seed(sum(shape))
    height, width = shape
    labels = torch.randint(0, 7, shape, generator=generator).to(torch.uint8)
    masks = torch.rand(9, height, width, generator=generator) < torch.linspace(0, 1, 9).view(9, 1, 1)
    masks[0] = False
    masks[1] = True
    masks[2] = False
    masks[2, -1, -1] = True
    masks[3, :, 0] = masks[3, 0, :] = True
    for candidate in (masks, masks[::2], masks.transpose(1, 2).contiguous().transpose(1, 2)):
        expected = _dense_counts(candidate, labels, 7)
        torch.testing.assert_close(mask_label_counts(candidate, labels, 7, strategy=strategy), expected, rtol=0, atol=0)
    assert mask_label_counts(masks[:0], labels, 7, strategy=strategy).shape == (0, 7)
    # Raw values mapped to columns at mask pixels only: values 0..39 onto 3 columns.
    raw = torch.randint(0, 40, shape, generator=generator)
    label_map = torch.arange(40) % 3
    torch.testing.assert_close(mask_label_counts(masks, raw, 3, label_map=label_map, strategy=strategy),
                               _dense_counts(masks, label_map[raw], 3), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(5, 9), (64, 128), (1, 1), (0, 4)])
def test_label_areas_equal_bincount(shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, shape, generator=generator) * 1000
    labels[: shape[0] // 2] = 26001  # long runs, as in label maps
    expected = torch.bincount(labels.flatten())
    torch.testing.assert_close(label_areas(labels), expected, rtol=0, atol=0)
    torch.testing.assert_close(label_areas(labels.t()), torch.bincount(labels.t().flatten()), rtol=0, atol=0)
    if labels.numel():
        labels[-1, -1] = -1
        with pytest.raises(ValueError, match="non-negative"):
            label_areas(labels)


def test_mask_label_counts_validates() -> None:
    labels = torch.zeros(4, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="bool masks"):
        mask_label_counts(torch.zeros(2, 4, 8, dtype=torch.uint8), labels, 2)
    with pytest.raises(ValueError, match="strategy"):
        mask_label_counts(torch.zeros(2, 4, 8, dtype=torch.bool), labels, 2, strategy="dense")


def _street_dataset(seed: int, height: int, width: int, num_images: int = 3, num_instances: int = 10,
                    num_predictions: int = 24) -> tuple[list[list[InstancePrediction]], list[np.ndarray]]:
    """The benchmark's synthetic streets: stuff, void regions, a crowd region, instances of varying size (some below
    the minimum region size), imperfect and duplicate detections, predictions on the crowd region, false positives."""
    rng = np.random.default_rng(seed)
    targets = [synthetic_street(rng, height, width, num_instances) for _ in range(num_images)]
    return [synthetic_detections(rng, target, num_predictions) for target in targets], targets


def _tensor_inputs(predictions: list[list[InstancePrediction]], targets: list[np.ndarray]) -> tuple[list, list]:
    height, width = targets[0].shape
    return [prediction_tensors(p, height, width, torch.device("cpu")) for p in predictions], [
        torch.from_numpy(t) for t in targets
    ]


@pytest.mark.parametrize("strategy", ["boxes", "nonzero"])
@pytest.mark.parametrize(("seed", "height", "width"), [(10, 96, 200), (11, 75, 133), (12, 160, 96)])
def test_fast_paths_match_official_on_rectangular_streets(
    strategy: str, seed: int, height: int, width: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Non-square images (widths that are and are not multiples of 8), through both counting strategies."""
    monkeypatch.setattr(instance_ap, "mask_label_counts", functools.partial(mask_label_counts, strategy=strategy))
    predictions, targets = _street_dataset(seed, height, width)
    official = official_instance_ap(predictions, targets, tmp_path)
    metric = CityscapesInstanceAP()
    metric.update(*_tensor_inputs(predictions, targets))
    _assert_matches_official(metric.compute(), official)


def test_many_overlapping_predictions_match_official(tmp_path: Path) -> None:
    """Forty predictions on a few instances: many duplicates per instance, ties in score, overlaps with crowd and void."""
    rng = np.random.default_rng(13)
    targets = [synthetic_street(rng, 80, 160, 4) for _ in range(2)]
    predictions = []
    for target in targets:
        detections = synthetic_detections(rng, target, 10)
        copies = [(mask, label, round(float(rng.random()), 1)) for mask, label, _ in detections for _ in range(4)]
        predictions.append(copies[:40])
    official = official_instance_ap(predictions, targets, tmp_path)
    metric = CityscapesInstanceAP()
    metric.update(*_tensor_inputs(predictions, targets))
    _assert_matches_official(metric.compute(), official)


def test_empty_predictions_and_empty_ground_truth_match_official(tmp_path: Path) -> None:
    """An image without predictions, an image without any instance (stuff, void and a crowd region only) but with
    predictions, and ordinary images, mixed."""
    predictions, targets = _street_dataset(14, 64, 128, num_images=4)
    predictions[1] = []
    no_instances = targets[2].copy()
    no_instances[no_instances >= 1000] = ROAD
    targets[2] = no_instances
    official = official_instance_ap(predictions, targets, tmp_path)
    metric = CityscapesInstanceAP()
    metric.update(*_tensor_inputs(predictions, targets))
    _assert_matches_official(metric.compute(), official)


def test_predictions_on_ignore_regions_match_official(tmp_path: Path) -> None:
    """Predictions covering void pixels, crowd regions and too-small instances by fractions on both sides of every
    overlap threshold (the ignore rule), beside real detections."""
    target = np.full((HEIGHT, WIDTH), ROAD, dtype=np.int64)
    target[:, :20] = STATIC
    target[10:40, 30:60] = CAR
    target[45:52, 70:78] = CAR * 1000 + 1  # 56 pixels: below the minimum region size
    target[20:50, 90:120] = PERSON * 1000
    predictions = []
    for columns in range(2, 40, 3):  # from mostly void to mostly road
        mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
        mask[5:25, columns : columns + 10] = True
        predictions.append((mask, CAR, 0.3 + columns / 100))
    for rows in range(5, 40, 4):  # sliding over the crowd region and the too-small car
        mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
        mask[rows : rows + 12, 40:76] = True
        predictions.append((mask, CAR, 0.9 - rows / 100))
    predictions.append((target == PERSON * 1000, PERSON, 0.8))
    official = official_instance_ap([predictions], [target], tmp_path)
    _assert_matches_official(_metric_result([predictions], [target]), official)
