"""Evaluation at paper scale: the suite's evaluators against their references on the same inputs, in one run.

* ``CityscapesInstanceAP`` against ``cityscapesscripts``' ``evalInstanceLevelSemanticLabeling`` on synthetic
  Cityscapes-sized images (1024x2048, 20 ground-truth instances and 40 predictions each by default): the official
  evaluator reads the predictions as written for a submission (one PNG per mask and a ``*_pred.txt`` per image), with
  its ground-truth instance cache built beforehand (untimed, as on any run after the first); the suite's metric
  takes the same masks as tensors on ``--device``.
* ``SegmentationIoU`` against ``evalPixelLevelSemanticLabeling`` (label-id PNGs) on perturbed versions of the same
  ground truth.
* The video metrics (PSNR, SSIM, sharpness difference, Farneback moving-area masks) on UCF101-sized frames
  (240x320): PSNR and SSIM against scikit-image's ``peak_signal_noise_ratio`` / ``structural_similarity``; the
  sharpness difference and the masks have no packaged reference and are timed alone.

Every row times each side over the same images (``time.perf_counter``, the device synchronised around each call),
reports seconds per image (or per frame) and the speed-up ``reference / suite``, and says whether the results agree
(absolute difference at most 1e-9). Files are written before timing starts. Where ``cityscapesscripts`` or
scikit-image cannot be imported (e.g. on the GPU machine), the reference columns read ``n/a``.

This module also holds the harness that runs the official Cityscapes evaluators in process (the tests' reference):
they read ``CITYSCAPES_DATASET`` / ``CITYSCAPES_RESULTS`` at import, write side files into the working directory and
next to their module, end the process on errors and break under numpy >= 2.4. :func:`official_evaluator` installs
these shims and undoes them on exit:

* ``np.in1d`` (removed from numpy, used by both evaluators for void masks) is aliased to ``np.isin``.
* ``writeDict2JSON`` in the evaluator's namespace is replaced by a writer whose JSON ``default`` turns numpy
  scalars and arrays into Python numbers and lists (the instance evaluator stores ``np.count_nonzero`` results in
  ``matches.json`` and its ground-truth cache).
* the working directory is the data root (the instance evaluator writes ``matches.json`` there), and
  ``CITYSCAPES_DATASET`` / ``CITYSCAPES_RESULTS`` point into it while ``CITYSCAPES_EXPORT_DIR`` is unset.
* the evaluators get a copy of their module-level ``args`` with every path redirected into the root (ground-truth
  cache, export file, prediction path); output is quiet and uncoloured; the pixel evaluator's instance-normalised
  iIoU and pixel accuracy are off.
* ``printError`` ends the process with ``sys.exit``: the ``SystemExit`` becomes :class:`OfficialEvaluatorError`
  carrying the printed message.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import cv2
import numpy as np
import torch
from PIL import Image

PIXEL_EVALUATOR = "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"
INSTANCE_EVALUATOR = "cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling"
CITY = "benchcity"
AGREEMENT_TOLERANCE = 1e-9

InstancePrediction = tuple[np.ndarray, int, float]
"""One predicted instance: (H, W) binary mask, Cityscapes label id, confidence."""


# ----------------------------------------------------------------------------------------------------------------------
# The official Cityscapes evaluators, run in process


class OfficialEvaluatorError(RuntimeError):
    """The official evaluator called ``sys.exit`` (its ``printError``)."""


def _to_json_builtin(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.__dict__


def _write_dict_to_json(dictionary: dict[str, Any], file_name: str) -> None:
    with open(file_name, "w") as file:
        json.dump(dictionary, file, default=_to_json_builtin, sort_keys=True, indent=4)


@contextlib.contextmanager
def official_evaluator(module_name: str, root: Path) -> Iterator[ModuleType]:
    """The evaluator module, importable and runnable with the shims of the module docstring in place."""
    output = io.StringIO()
    previous_directory = os.getcwd()
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(np, "in1d", np.isin, create=True))
        environment = {"CITYSCAPES_DATASET": str(root), "CITYSCAPES_RESULTS": str(root / "results")}
        stack.enter_context(mock.patch.dict(os.environ, environment))
        os.environ.pop("CITYSCAPES_EXPORT_DIR", None)  # restored with the rest of the environment
        os.chdir(root)
        stack.callback(os.chdir, previous_directory)
        module = importlib.import_module(module_name)
        stack.enter_context(mock.patch.object(module, "writeDict2JSON", _write_dict_to_json))
        try:
            with contextlib.redirect_stdout(output):
                yield module
        except SystemExit as exit_request:
            raise OfficialEvaluatorError(
                f"{module_name} exited ({exit_request.code}): {output.getvalue().strip()}"
            ) from exit_request


def _quiet_args(module: ModuleType, root: Path) -> Any:
    args = copy.copy(module.args)
    args.quiet = True
    args.JSONOutput = False
    args.colorized = False
    args.exportFile = str(root / "evaluationResults" / "result.json")
    return args


def _image_stem(index: int) -> str:
    return f"{CITY}_000000_{index:06d}"


def _ground_truth_path(root: Path, index: int, kind: str) -> Path:
    directory = root / "gtFine" / "val" / CITY
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{_image_stem(index)}_gtFine_{kind}.png"


def write_pixel_submission(
    pred_label_id_maps: Sequence[np.ndarray], gt_label_id_maps: Sequence[np.ndarray], root: Path
) -> tuple[list[str], list[str]]:
    """Write (H, W) label-id maps as ground-truth ``*_gtFine_labelIds.png`` and result PNGs under ``root``.

    Returns the prediction and ground-truth file lists, in image order.
    """
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    prediction_files, ground_truth_files = [], []
    for index, (prediction, ground_truth) in enumerate(zip(pred_label_id_maps, gt_label_id_maps, strict=True)):
        ground_truth_file = _ground_truth_path(root, index, "labelIds")
        Image.fromarray(np.asarray(ground_truth, dtype=np.uint8)).save(ground_truth_file)
        prediction_file = results / f"{_image_stem(index)}_pred.png"
        Image.fromarray(np.asarray(prediction, dtype=np.uint8)).save(prediction_file)
        prediction_files.append(str(prediction_file))
        ground_truth_files.append(str(ground_truth_file))
    return prediction_files, ground_truth_files


def official_pixel_miou_of_files(prediction_files: list[str], ground_truth_files: list[str], root: Path) -> dict:
    """``evalPixelLevelSemanticLabeling.evaluateImgLists`` on written files (see :func:`official_pixel_miou`)."""
    root = Path(root).resolve()
    with official_evaluator(PIXEL_EVALUATOR, root) as evaluator:
        args = _quiet_args(evaluator, root)
        args.evalInstLevelScore = False
        args.evalPixelAccuracy = False
        result = evaluator.evaluateImgLists(prediction_files, ground_truth_files, args)
        evaluated_names = [label.name for label in evaluator.labels if not label.ignoreInEval and label.id >= 0]
    return {
        "iou_per_class": {name: float(result["classScores"][name]) for name in evaluated_names},
        "miou": float(result["averageScoreClasses"]),
    }


def official_pixel_miou(
    pred_label_id_maps: Sequence[np.ndarray], gt_label_id_maps: Sequence[np.ndarray], root: Path
) -> dict[str, Any]:
    """Official pixel-level evaluation of (H, W) label-id maps, written under the directory ``root``.

    Returns ``{"iou_per_class": {name: IoU of the 19 evaluated classes, NaN if absent}, "miou": averageScoreClasses}``.
    """
    root = Path(root).resolve()
    files = write_pixel_submission(pred_label_id_maps, gt_label_id_maps, root)
    return official_pixel_miou_of_files(*files, root)


def write_instance_submission(
    predictions: Sequence[Sequence[InstancePrediction]], gt_instance_maps: Sequence[np.ndarray], root: Path
) -> tuple[list[str], list[str]]:
    """Write instance-id maps (``gtFine_instanceIds`` and ``labelIds`` PNGs) and predictions in the submission format
    (``results/masks/*.png`` and one ``results/*_pred.txt`` per image: ``mask_path label_id score`` lines).

    ``predictions`` may be any iterable of per-image prediction lists (e.g. a generator, so that only one image's
    masks are in memory). Returns the prediction and ground-truth (instanceIds) file lists, in image order.
    """
    results = root / "results"
    (results / "masks").mkdir(parents=True, exist_ok=True)
    prediction_files, ground_truth_files = [], []
    for index, (image_predictions, instance_map) in enumerate(zip(predictions, gt_instance_maps, strict=True)):
        instance_map = np.asarray(instance_map, dtype=np.uint16)  # Pillow writes 16-bit PNGs from uint16 only
        label_map = np.where(instance_map >= 1000, instance_map // 1000, instance_map).astype(np.uint8)
        Image.fromarray(label_map).save(_ground_truth_path(root, index, "labelIds"))
        ground_truth_file = _ground_truth_path(root, index, "instanceIds")
        Image.fromarray(instance_map).save(ground_truth_file)
        lines = []
        for mask_index, (mask, label_id, score) in enumerate(image_predictions):
            relative_mask_path = f"masks/{_image_stem(index)}_{mask_index:03d}.png"
            Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255).save(results / relative_mask_path)
            lines.append(f"{relative_mask_path} {int(label_id)} {float(score)!r}\n")
        prediction_file = results / f"{_image_stem(index)}_pred.txt"
        prediction_file.write_text("".join(lines))
        prediction_files.append(str(prediction_file))
        ground_truth_files.append(str(ground_truth_file))
    return prediction_files, ground_truth_files


def _instance_args(evaluator: ModuleType, root: Path, min_region_size: int) -> Any:
    args = _quiet_args(evaluator, root)
    args.csv = False
    args.distanceAvailable = False
    args.minRegionSizes = np.concatenate(([min_region_size], evaluator.args.minRegionSizes[1:]))
    args.gtInstancesFile = str(root / "gtInstances.json")
    args.predictionPath = str(root / "results")
    args.predictionWalk = None
    return args


def build_official_instance_cache(ground_truth_files: list[str], root: Path) -> None:
    """Write the instance evaluator's ground-truth cache (``root/gtInstances.json``) from the instanceIds PNGs."""
    root = Path(root).resolve()
    with official_evaluator(INSTANCE_EVALUATOR, root) as evaluator:
        evaluator.getGtInstances(ground_truth_files, _instance_args(evaluator, root, 100))


def official_instance_ap_of_files(
    prediction_files: list[str], ground_truth_files: list[str], root: Path, min_region_size: int = 100
) -> dict[str, Any]:
    """``evalInstanceLevelSemanticLabeling.evaluateImgLists`` on written files (see :func:`official_instance_ap`).

    The ground-truth cache ``root/gtInstances.json`` is read when it exists and written otherwise.
    """
    root = Path(root).resolve()
    with official_evaluator(INSTANCE_EVALUATOR, root) as evaluator:
        args = _instance_args(evaluator, root, min_region_size)
        result = evaluator.evaluateImgLists(prediction_files, ground_truth_files, args)
    averages = result["averages"]
    return {
        "ap": float(averages["allAp"]),
        "ap50": float(averages["allAp50%"]),
        "ap_per_class": {name: float(scores["ap"]) for name, scores in averages["classes"].items()},
        "ap50_per_class": {name: float(scores["ap50%"]) for name, scores in averages["classes"].items()},
    }


def official_instance_ap(
    predictions: Sequence[Sequence[InstancePrediction]],
    gt_instance_maps: Sequence[np.ndarray],
    root: Path,
    min_region_size: int = 100,
) -> dict[str, Any]:
    """Official instance-level evaluation of per-image predictions against (H, W) instance-id maps, written under the
    directory ``root``.

    Returns ``{"ap", "ap50", "ap_per_class": {name: AP}, "ap50_per_class": {name: AP50}}`` (NaN for classes without
    evaluated ground truth).
    """
    root = Path(root).resolve()
    files = write_instance_submission(predictions, gt_instance_maps, root)
    return official_instance_ap_of_files(*files, root, min_region_size)


# ----------------------------------------------------------------------------------------------------------------------
# Synthetic Cityscapes-like images

# Label ids (cityscapesscripts.helpers.labels) of the synthetic street: stuff bands, void regions, instance classes.
_EGO_VEHICLE, _STATIC, _ROAD, _SIDEWALK, _BUILDING, _VEGETATION, _SKY, _CARAVAN = 1, 4, 7, 8, 11, 21, 23, 29
_INSTANCE_CLASSES = {24: 0.3, 25: 0.05, 26: 0.45, 27: 0.04, 28: 0.03, 31: 0.02, 32: 0.04, 33: 0.07}
"""Instance label ids (person, rider, car, truck, bus, train, motorcycle, bicycle) and roughly Cityscapes' shares."""


def _blob(rng: np.random.Generator, height: int, width: int, centre: tuple[float, float],
          radii: tuple[float, float]) -> np.ndarray:
    """(H, W) bool mask of an irregular filled polygon (16 vertices on a jittered ellipse)."""
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    scale = 1 + 0.15 * rng.standard_normal(16)
    points = np.stack([centre[1] + radii[1] * scale * np.cos(angles), centre[0] + radii[0] * scale * np.sin(angles)], 1)
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def _random_object(rng: np.random.Generator, height: int, width: int, min_height: float = 0.008,
                   max_height: float = 0.35) -> np.ndarray:
    """A blob whose height is log-uniform between ``min_height`` and ``max_height`` of the image height."""
    radius = 0.5 * height * math.exp(rng.uniform(math.log(min_height), math.log(max_height)))
    aspect = math.exp(rng.uniform(math.log(0.4), math.log(2.5)))
    centre = (rng.uniform(0.35, 0.95) * height, rng.uniform(0, 1) * width)
    return _blob(rng, height, width, centre, (radius, radius * aspect))


def _instance_class(rng: np.random.Generator) -> int:
    shares = np.array(list(_INSTANCE_CLASSES.values()))
    return int(rng.choice(list(_INSTANCE_CLASSES), p=shares / shares.sum()))


def synthetic_street(rng: np.random.Generator, height: int, width: int, num_instances: int) -> np.ndarray:
    """(H, W) int64 Cityscapes instance-id map: stuff bands (sky, building, vegetation, sidewalk, road), void regions
    (ego vehicle, static objects, a caravan instance), a crowd region of an instance class and ``num_instances``
    instances (``label_id * 1000 + k``) of varying size, the larger drawn later so that they occlude the smaller (some
    end up below the official 100-pixel minimum or fully hidden)."""
    instance_map = np.full((height, width), _ROAD, dtype=np.int64)
    instance_map[: int(0.3 * height)] = _SKY
    instance_map[int(0.3 * height) : int(0.5 * height)] = _BUILDING
    instance_map[int(0.5 * height) : int(0.6 * height), : width // 5] = _SIDEWALK
    instance_map[_random_object(rng, height, width, 0.1, 0.3)] = _VEGETATION
    instance_map[int(0.92 * height) :] = _EGO_VEHICLE
    for _ in range(3):
        instance_map[_random_object(rng, height, width, 0.02, 0.1)] = _STATIC
    instance_map[_random_object(rng, height, width, 0.05, 0.15)] = _CARAVAN * 1000
    instance_map[_random_object(rng, height, width, 0.05, 0.2)] = _instance_class(rng)  # a crowd ("group") region
    objects = sorted((_random_object(rng, height, width) for _ in range(num_instances)), key=np.count_nonzero)
    next_index: dict[int, int] = {}
    for mask in objects:
        label_id = _instance_class(rng)
        instance_map[mask] = label_id * 1000 + next_index.get(label_id, 0)
        next_index[label_id] = next_index.get(label_id, 0) + 1
    return instance_map


def _perturbed(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """``mask`` shifted by up to 5% of its size and grown or shrunk by a few pixels (an imperfect detection)."""
    rows, columns = np.nonzero(mask)
    size = max(np.ptp(rows), np.ptp(columns)) + 1
    shift_rows, shift_columns = np.round(rng.normal(0, 0.05 * size, 2)).astype(int)
    moved = np.zeros_like(mask)
    rows, columns = rows + shift_rows, columns + shift_columns
    inside = (rows >= 0) & (rows < mask.shape[0]) & (columns >= 0) & (columns < mask.shape[1])
    moved[rows[inside], columns[inside]] = True
    radius = int(rng.integers(1, 4))
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    morph = cv2.dilate if rng.random() < 0.5 else cv2.erode
    return morph(moved.astype(np.uint8), kernel).astype(bool)


def synthetic_detections(rng: np.random.Generator, instance_map: np.ndarray,
                         num_predictions: int) -> list[InstancePrediction]:
    """``num_predictions`` imperfect predictions of an instance-id map: most visible instances detected
    (:func:`_perturbed`, the right class 92% of the time), some twice with a lower score, some on the crowd region,
    the rest false positives of random size; scores in (0, 1)."""
    height, width = instance_map.shape
    predictions: list[InstancePrediction] = []
    for segment_id in np.unique(instance_map[instance_map >= 1000]):
        label_id = int(segment_id // 1000)
        if label_id not in _INSTANCE_CLASSES or rng.random() < 0.1:
            continue
        visible = instance_map == segment_id
        score = float(rng.beta(5, 2))
        for _ in range(2 if rng.random() < 0.25 else 1):
            predicted_label = label_id if rng.random() < 0.92 else _instance_class(rng)
            predictions.append((_perturbed(rng, visible), predicted_label, score))
            score *= float(rng.uniform(0.3, 0.9))
    crowd_ids = [int(i) for i in np.unique(instance_map) if int(i) in _INSTANCE_CLASSES]
    for crowd_id in crowd_ids:
        predictions.append((_perturbed(rng, instance_map == crowd_id), crowd_id, float(rng.beta(2, 3))))
    while len(predictions) < num_predictions:
        mask = _random_object(rng, height, width, 0.01, 0.2)
        if mask.any():
            predictions.append((mask, _instance_class(rng), float(rng.beta(2, 5))))
    order = rng.permutation(len(predictions))[:num_predictions]
    return [predictions[index] for index in order]


def synthetic_segmentation(rng: np.random.Generator, label_map: np.ndarray) -> np.ndarray:
    """An imperfect label-id prediction of ``label_map``: shifted by a few pixels, wrong rectangles, 2% noise."""
    height, width = label_map.shape
    prediction = np.roll(label_map, shift=tuple(rng.integers(-8, 9, size=2)), axis=(0, 1))
    label_ids = np.unique(label_map)
    for _ in range(6):
        top, left = rng.integers(0, height), rng.integers(0, width)
        prediction[top : top + height // 8, left : left + width // 8] = rng.choice(label_ids)
    noise = rng.random((height, width)) < 0.02
    prediction[noise] = rng.choice(label_ids, size=int(noise.sum()))
    return prediction


# ----------------------------------------------------------------------------------------------------------------------
# Timing


@dataclass
class EvalRow:
    """One evaluator timed against its reference on ``items`` images or frames (seconds per item)."""

    name: str
    items: int
    unit: str
    suite_seconds: float
    reference_seconds: float | None
    agree: bool | None

    @property
    def speed_up(self) -> float | None:
        return None if self.reference_seconds is None else self.reference_seconds / self.suite_seconds


def format_rows(rows: list[EvalRow], device: str) -> str:
    """Markdown table: seconds per item of the suite and the reference (4 significant digits), the speed-up
    ``reference / suite`` (1 decimal), whether the results agree, the suite's device; ``n/a`` without a reference."""
    lines = ["| evaluator | items | suite s/item | reference s/item | speed-up | identical | device |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        reference = "n/a" if row.reference_seconds is None else f"{row.reference_seconds:.4g}"
        speed_up = "n/a" if row.speed_up is None else f"{row.speed_up:.1f}x"
        agree = "n/a" if row.agree is None else ("yes" if row.agree else "NO")
        lines.append(f"| {row.name} | {row.items} {row.unit} | {row.suite_seconds:.4g} | {reference} | {speed_up} | "
                     f"{agree} | {device} |")
    return "\n".join(lines)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, function: Callable[[], Any]) -> tuple[Any, float]:
    _synchronize(device)
    start = time.perf_counter()
    result = function()
    _synchronize(device)
    return result, time.perf_counter() - start


def _time_updates(device: torch.device, metric: Any, inputs: Iterator[tuple]) -> tuple[Any, float]:
    """``metric.compute()`` after ``metric.update(*arguments)`` for each item of ``inputs``, and the seconds of the
    updates and the compute (the items are made between the timed calls: one image in memory at a time)."""
    seconds = 0.0
    for arguments in inputs:
        _, elapsed = _timed(device, lambda arguments=arguments: metric.update(*arguments))
        seconds += elapsed
    result, elapsed = _timed(device, metric.compute)
    return result, seconds + elapsed


def _importable(module_name: str) -> bool:
    try:
        importlib.import_module(module_name)
    except ImportError:
        return False
    return True


def _close(first: float, second: float) -> bool:
    return (math.isnan(first) and math.isnan(second)) or abs(first - second) <= AGREEMENT_TOLERANCE


def prediction_tensors(image_predictions: list[InstancePrediction], height: int, width: int,
                       device: torch.device) -> dict[str, torch.Tensor]:
    """One image's predictions as :class:`CityscapesInstanceAP` takes them: masks (N, H, W) bool, labels, scores."""
    masks = np.stack([mask for mask, _, _ in image_predictions]) if image_predictions else np.zeros((0, height, width),
                                                                                                     bool)
    return {"masks": torch.from_numpy(masks).to(device),
            "labels": torch.tensor([label for _, label, _ in image_predictions], dtype=torch.long, device=device),
            "scores": torch.tensor([score for _, _, score in image_predictions], dtype=torch.float64, device=device)}


def time_instance_ap(args: argparse.Namespace, device: torch.device, work_dir: Path) -> EvalRow:
    """``CityscapesInstanceAP`` vs the official instance evaluator on ``args.images`` synthetic images."""
    from metrics.instance_ap import CityscapesInstanceAP

    rng = np.random.default_rng(args.seed)
    targets = [synthetic_street(rng, args.height, args.width, args.instances) for _ in range(args.images)]
    detection_seeds = rng.integers(0, 2**31, size=args.images)

    def detections(index: int) -> list[InstancePrediction]:
        return synthetic_detections(np.random.default_rng(detection_seeds[index]), targets[index], args.predictions)

    inputs = (([prediction_tensors(detections(index), args.height, args.width, device)],
               [torch.from_numpy(target).to(device)]) for index, target in enumerate(targets))
    result, seconds = _time_updates(device, CityscapesInstanceAP().to(device), inputs)
    if not _importable(INSTANCE_EVALUATOR):
        return EvalRow("instance AP (CityscapesInstanceAP)", args.images, "images", seconds / args.images, None, None)
    root = (work_dir / "instance").resolve()
    files = write_instance_submission((detections(index) for index in range(args.images)), targets, root)
    build_official_instance_cache(files[1], root)
    official, official_seconds = _timed(torch.device("cpu"), lambda: official_instance_ap_of_files(*files, root))
    agree = _close(result["ap"].item(), official["ap"]) and _close(result["ap50"].item(), official["ap50"])
    return EvalRow("instance AP (CityscapesInstanceAP)", args.images, "images", seconds / args.images,
                   official_seconds / args.images, agree)


def time_segmentation_iou(args: argparse.Namespace, device: torch.device, work_dir: Path) -> EvalRow:
    """``SegmentationIoU`` vs the official pixel-level evaluator on ``args.images`` synthetic label maps."""
    from metrics.cityscapes_labels import instance_ids_to_label_ids, label_ids_to_train_ids
    from metrics.segmentation import SegmentationIoU

    rng = np.random.default_rng(args.seed + 1)
    targets = [instance_ids_to_label_ids(torch.from_numpy(synthetic_street(rng, args.height, args.width,
                                                                           args.instances))).numpy().astype(np.uint8)
               for _ in range(args.images)]
    predictions = [synthetic_segmentation(rng, target) for target in targets]
    inputs = ((label_ids_to_train_ids(torch.from_numpy(prediction)).to(device)[None],
               label_ids_to_train_ids(torch.from_numpy(target)).to(device)[None])
              for prediction, target in zip(predictions, targets))
    result, seconds = _time_updates(device, SegmentationIoU().to(device), inputs)
    if not _importable(PIXEL_EVALUATOR):
        return EvalRow("semantic mIoU (SegmentationIoU)", args.images, "images", seconds / args.images, None, None)
    root = (work_dir / "pixel").resolve()
    files = write_pixel_submission(predictions, targets, root)
    official, official_seconds = _timed(torch.device("cpu"), lambda: official_pixel_miou_of_files(*files, root))
    return EvalRow("semantic mIoU (SegmentationIoU)", args.images, "images", seconds / args.images,
                   official_seconds / args.images, _close(result["miou"].item(), official["miou"]))


def _video_frames(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Previous frames, targets and predictions (B, 3, H, W) in [-1, 1], float32: smooth textures moving by a few
    pixels per frame (so the flow finds motion), predictions the targets plus noise."""
    generator = torch.Generator().manual_seed(args.seed)
    size = (args.video_frames, 3, args.video_height + 8, args.video_width + 8)
    texture = torch.nn.functional.avg_pool2d(torch.rand(size, generator=generator) * 2 - 1, 5, 1, 2)
    previous = texture[:, :, 4:-4, 4:-4]
    target = texture[:, :, 4 - 3 : -4 - 3, 4 - 2 : -4 - 2]  # moved by (3, 2) pixels
    noise = 0.05 * torch.randn(target.shape, generator=generator)
    return previous.contiguous(), target.contiguous(), (target + noise).clamp(-1, 1)


def time_video_metrics(args: argparse.Namespace, device: torch.device) -> list[EvalRow]:
    """PSNR and SSIM (vs scikit-image), sharpness difference and Farneback moving masks, per 240x320 frame, the
    suite's metrics updated ``args.video_batch`` frames at a time."""
    from metrics.video import FramePSNR, FrameSSIM, SharpnessDifference, moving_area_mask

    previous, target, pred = (frames.to(device) for frames in _video_frames(args))
    count = args.video_frames
    references: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}
    if _importable("skimage.metrics"):
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity

        references["PSNR (FramePSNR)"] = lambda p, t: peak_signal_noise_ratio(t, p, data_range=1.0)
        references["SSIM (FrameSSIM)"] = lambda p, t: structural_similarity(
            t, p, channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    rows = []
    pred_unit, target_unit = (((frames.double().cpu() + 1) / 2).clamp(0, 1).numpy() for frames in (pred, target))
    batches = list(zip(pred.split(args.video_batch), target.split(args.video_batch)))
    for name, metric in (("PSNR (FramePSNR)", FramePSNR()), ("SSIM (FrameSSIM)", FrameSSIM()),
                         ("sharpness difference", SharpnessDifference())):
        metric = metric.to(device)
        _, seconds = _timed(device, lambda m=metric: [m.update(p, t) for p, t in batches])
        value = metric.compute().item()
        reference = references.get(name)
        if reference is None:
            rows.append(EvalRow(name, count, "frames", seconds / count, None, None))
            continue
        start = time.perf_counter()
        expected = float(np.mean([reference(p, t) for p, t in zip(pred_unit, target_unit)]))
        rows.append(EvalRow(name, count, "frames", seconds / count, (time.perf_counter() - start) / count,
                            _close(value, expected)))
    _, seconds = _timed(device, lambda: [moving_area_mask(p, t) for p, t in zip(previous.split(args.video_batch),
                                                                                    target.split(args.video_batch))])
    rows.append(EvalRow("moving-area mask (Farneback)", count, "frames", seconds / count, None, None))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=8, help="Cityscapes-sized images per evaluator")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--instances", type=int, default=20, help="ground-truth instances drawn per image")
    parser.add_argument("--predictions", type=int, default=40, help="predicted instances per image")
    parser.add_argument("--video-frames", type=int, default=64, help="UCF101-sized frames for the video metrics")
    parser.add_argument("--video-batch", type=int, default=8, help="frames per metric update (FrameGAN's val batch)")
    parser.add_argument("--video-height", type=int, default=240)
    parser.add_argument("--video-width", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device of the suite's evaluators (the references run on the CPU)")
    parser.add_argument("--work-dir", default=None, help="where reference files are written (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, as the single-threaded references; 0 keeps torch's own)")


def run(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with contextlib.ExitStack() as stack:
        work_dir = Path(args.work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_eval_")))
        rows = [time_instance_ap(args, device, work_dir), time_segmentation_iou(args, device, work_dir),
                *time_video_metrics(args, device)]
    print(f"\nEvaluation: {args.images} images of {args.height}x{args.width} ({args.instances} instances, "
          f"{args.predictions} predictions each); {args.video_frames} frames of {args.video_height}x"
          f"{args.video_width}; torch threads {torch.get_num_threads()}")
    print(format_rows(rows, str(device)))
