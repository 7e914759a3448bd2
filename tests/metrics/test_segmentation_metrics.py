from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapes_reference import OfficialEvaluatorError, official_pixel_miou
from cityscapesscripts.helpers.labels import labels, name2label

from metrics.cityscapes_labels import (
    EVALUATED_CLASS_NAMES,
    INSTANCE_CLASS_NAMES,
    INSTANCE_LABEL_IDS,
    INSTANCE_TRAIN_IDS,
    NUM_EVALUATED_CLASSES,
    VOID_LABEL_IDS,
    instance_ids_to_label_ids,
    label_ids_to_train_ids,
    train_ids_to_label_ids,
)
from metrics.segmentation import SegmentationIoU

HEIGHT, WIDTH = 64, 128
NEVER_PRESENT = ("wall", "train")
ONLY_PREDICTED = "bus"


def _rectangle(rng: np.random.Generator) -> tuple[slice, slice]:
    height, width = rng.integers(4, 32), rng.integers(4, 64)
    top, left = rng.integers(0, HEIGHT - height), rng.integers(0, WIDTH - width)
    return slice(top, top + height), slice(left, left + width)


def _label_id_maps(seed: int, num_images: int = 5) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Ground-truth label-id maps (void labels included) and predictions: shifted ground truth, wrong rectangles
    (including void label ids and a class never in the ground truth) and salt noise; two classes never occur."""
    rng = np.random.default_rng(seed)
    excluded = NEVER_PRESENT + (ONLY_PREDICTED,)
    ground_truth_ids = [label.id for label in labels if label.id >= 0 and label.name not in excluded]
    predicted_ids = ground_truth_ids + [name2label[ONLY_PREDICTED].id]
    predictions, ground_truths = [], []
    for _ in range(num_images):
        ground_truth = np.full((HEIGHT, WIDTH), rng.choice(ground_truth_ids), dtype=np.uint8)
        for _ in range(12):
            ground_truth[_rectangle(rng)] = rng.choice(ground_truth_ids)
        prediction = np.roll(ground_truth, shift=tuple(rng.integers(-3, 4, size=2)), axis=(0, 1))
        for _ in range(4):
            prediction[_rectangle(rng)] = rng.choice(predicted_ids)
        noise = rng.random((HEIGHT, WIDTH)) < 0.05
        prediction[noise] = rng.choice(predicted_ids, size=int(noise.sum()))
        predictions.append(prediction)
        ground_truths.append(ground_truth)
    return predictions, ground_truths


def _train_ids(label_id_maps: list[np.ndarray]) -> torch.Tensor:
    return label_ids_to_train_ids(torch.from_numpy(np.stack(label_id_maps)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_official_pixel_evaluator(seed: int, tmp_path: Path) -> None:
    predictions, ground_truths = _label_id_maps(seed)
    official = official_pixel_miou(predictions, ground_truths, tmp_path)
    metric = SegmentationIoU()
    metric.update(_train_ids(predictions[:2]), _train_ids(ground_truths[:2]))
    metric.update(_train_ids(predictions[2:]), _train_ids(ground_truths[2:]))
    result = metric.compute()

    expected = np.array([official["iou_per_class"][name] for name in EVALUATED_CLASS_NAMES])
    np.testing.assert_allclose(result["iou_per_class"].numpy(), expected, rtol=0, atol=1e-12, equal_nan=True)
    assert result["miou"].item() == pytest.approx(official["miou"], abs=1e-12)
    expected_moving = np.nanmean([official["iou_per_class"][name] for name in INSTANCE_CLASS_NAMES])
    assert result["mo_miou"].item() == pytest.approx(expected_moving, abs=1e-12)

    per_class = dict(zip(EVALUATED_CLASS_NAMES, result["iou_per_class"].tolist()))
    assert all(math.isnan(per_class[name]) for name in NEVER_PRESENT)
    assert per_class[ONLY_PREDICTED] == 0.0


def test_official_exit_becomes_an_exception(tmp_path: Path) -> None:
    ground_truth = np.full((HEIGHT, WIDTH), name2label["road"].id, dtype=np.uint8)
    with pytest.raises(OfficialEvaluatorError, match="widths"):
        official_pixel_miou([ground_truth[:, :-1]], [ground_truth], tmp_path)


def test_score_maps_are_reduced_by_argmax() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(3, NUM_EVALUATED_CLASSES + 1, 16, 32, generator=generator)
    target = torch.randint(0, NUM_EVALUATED_CLASSES, (3, 16, 32), generator=generator)
    target[:, :4] = 255
    from_scores, from_classes = SegmentationIoU(), SegmentationIoU()
    from_scores.update(scores, target)
    from_classes.update(scores.argmax(dim=1), target)
    torch.testing.assert_close(from_scores.confusion_matrix, from_classes.confusion_matrix)
    assert from_scores.confusion_matrix[:, -1].sum() == (scores.argmax(dim=1)[target != 255] == 19).sum()
    assert from_scores.confusion_matrix.sum() == (target != 255).sum()


def test_iou_conventions_on_a_tiny_example() -> None:
    """Ignored target pixels are dropped; a prediction of 255 is a false negative only; absent classes are NaN."""
    target = torch.tensor([[[0, 0, 1, 255]]])
    preds = torch.tensor([[[0, 255, 0, 1]]])
    metric = SegmentationIoU(num_classes=3, moving_object_classes=[1, 2])
    metric.update(preds, target)
    result = metric.compute()
    # class 0: TP 1, FN 1 (predicted 255), FP 1 (target 1) -> 1/3; class 1: TP 0, FN 1 -> 0; class 2 absent.
    torch.testing.assert_close(
        result["iou_per_class"], torch.tensor([1 / 3, 0.0, math.nan], dtype=torch.float64), equal_nan=True
    )
    assert result["miou"].item() == pytest.approx(1 / 6)
    assert result["mo_miou"].item() == 0.0


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_merging_two_ranks_matches_single_pass() -> None:
    predictions, ground_truths = _label_id_maps(3, num_images=4)
    single = SegmentationIoU()
    single.update(_train_ids(predictions), _train_ids(ground_truths))
    ranks = [SegmentationIoU(), SegmentationIoU()]
    ranks[0].update(_train_ids(predictions[:1]), _train_ids(ground_truths[:1]))
    ranks[1].update(_train_ids(predictions[1:]), _train_ids(ground_truths[1:]))
    merged = SegmentationIoU()
    merged.merge_state(ranks[0])
    merged.merge_state(ranks[1])
    for key, value in single.compute().items():
        torch.testing.assert_close(merged.compute()[key], value, equal_nan=True)


def test_inputs_are_validated() -> None:
    metric = SegmentationIoU()
    with pytest.raises(ValueError, match="target values"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 19))
    with pytest.raises(ValueError, match="shape"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="ignore_index"):
        SegmentationIoU(num_classes=4, ignore_index=3)
    with pytest.raises(ValueError, match="moving_object_classes"):
        SegmentationIoU(num_classes=4, moving_object_classes=[5])


def test_cityscapes_tables_come_from_cityscapesscripts() -> None:
    assert NUM_EVALUATED_CLASSES == 19
    assert EVALUATED_CLASS_NAMES[:3] == ("road", "sidewalk", "building") and EVALUATED_CLASS_NAMES[-1] == "bicycle"
    assert INSTANCE_LABEL_IDS == (24, 25, 26, 27, 28, 31, 32, 33)
    assert INSTANCE_TRAIN_IDS == tuple(range(11, 19))
    assert INSTANCE_CLASS_NAMES == ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
    assert name2label["caravan"].id in VOID_LABEL_IDS and name2label["car"].id not in VOID_LABEL_IDS
    all_ids = torch.arange(34)
    train_ids = label_ids_to_train_ids(all_ids)
    evaluated = train_ids != 255
    assert int(evaluated.sum()) == 19
    torch.testing.assert_close(train_ids_to_label_ids(train_ids[evaluated]), all_ids[evaluated])
    assert train_ids_to_label_ids(torch.tensor([255])).item() == 0
    torch.testing.assert_close(
        instance_ids_to_label_ids(torch.tensor([26001, 26, 7, 33000])), torch.tensor([26, 26, 7, 33])
    )


def test_speed_sanity_on_cpu() -> None:
    """500 images at 128x256 in batches of 50 (no timing assertion: prints the time)."""
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 20, (50, 128, 256), generator=generator)
    target[target == 19] = 255
    preds = torch.randint(0, 19, (50, 128, 256), generator=generator)
    metric = SegmentationIoU()
    start = time.perf_counter()
    for _ in range(10):
        metric.update(preds, target)
    result = metric.compute()
    print(f"segmentation IoU on 500 images of 128x256: {time.perf_counter() - start:.2f} s")
    assert int(metric.confusion_matrix.sum()) == 10 * int((target != 255).sum())
    scored = target != 255
    counts = np.bincount(19 * target[scored].numpy() + preds[scored].numpy(), minlength=19 * 19).reshape(19, 19)
    iou = np.diag(counts) / (counts.sum(axis=0) + counts.sum(axis=1) - np.diag(counts))
    assert result["miou"].item() == pytest.approx(iou.mean(), rel=1e-6)
    assert result["mo_miou"].item() == pytest.approx(iou[list(INSTANCE_TRAIN_IDS)].mean(), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.long])
def test_joint_histogram_and_general_paths_give_the_same_counts(dtype: torch.dtype) -> None:
    """Values inside [0, 256) take the joint histogram; a negative or large prediction takes the general path; both
    equal a direct count (non-square, ignored pixels, predictions of 19 and 255)."""
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(0, NUM_EVALUATED_CLASSES, (2, 24, 70), generator=generator)
    target[:, :3] = 255
    preds = torch.randint(0, NUM_EVALUATED_CLASSES + 1, (2, 24, 70), generator=generator)
    preds[:, -2:] = 255
    expected = torch.zeros(NUM_EVALUATED_CLASSES, NUM_EVALUATED_CLASSES + 1, dtype=torch.long)
    for row, column in zip(target.flatten().tolist(), preds.flatten().tolist()):
        if row != 255:
            expected[row, min(column, NUM_EVALUATED_CLASSES)] += 1
    in_range = SegmentationIoU()
    in_range.update(preds.to(dtype), target.to(dtype))
    torch.testing.assert_close(in_range.confusion_matrix, expected, rtol=0, atol=0)
    if dtype != torch.uint8:
        out_of_range = preds.clone()
        out_of_range[preds == 255] = -7 if dtype == torch.int32 else 100_000
        general = SegmentationIoU()
        general.update(out_of_range.to(dtype), target.to(dtype))
        torch.testing.assert_close(general.confusion_matrix, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="target values"):
        SegmentationIoU().update(preds.to(dtype), torch.full_like(target, 200).to(dtype))
