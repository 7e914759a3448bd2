"""Test support: run the official Cityscapes evaluators (cityscapesscripts) on data written to a temporary tree.

:func:`official_pixel_miou` and :func:`official_instance_ap` write Cityscapes-named ground-truth PNGs under
``<root>/gtFine/val/<city>/`` and predictions in the official submission format under ``<root>/results/``, then call
``evaluateImgLists`` of ``evalPixelLevelSemanticLabeling`` / ``evalInstanceLevelSemanticLabeling`` with the file
lists.

Compatibility shims for cityscapesscripts 2.3.0 under numpy 2.x, all installed by one ``pytest.MonkeyPatch`` context
around the official call and undone afterwards (nothing leaks into other tests):

* ``np.in1d`` (removed from numpy, used by both evaluators for void masks) is aliased to ``np.isin``.
* ``writeDict2JSON`` in the evaluator's namespace is replaced by a writer whose JSON ``default`` turns numpy
  scalars and arrays into Python numbers and lists (the instance evaluator stores ``np.count_nonzero`` results in
  ``matches.json`` and its ground-truth cache, which the original ``default=lambda o: o.__dict__`` cannot encode).
* the working directory is the temporary root (the instance evaluator writes ``matches.json`` into the working
  directory), and ``CITYSCAPES_DATASET`` / ``CITYSCAPES_RESULTS`` point into it while ``CITYSCAPES_EXPORT_DIR`` is
  unset (the modules read them at import, which happens inside the context).
* the evaluators get a copy of their module-level ``args`` with every path redirected into the root: the
  ground-truth cache ``gtInstancesFile`` (by default next to the installed module, where a stale cache would be
  silently reused), ``exportFile`` (JSON output is off anyway) and the instance evaluator's ``predictionPath``;
  output is quiet and uncoloured; the pixel evaluator's instance-normalised iIoU (``evalInstLevelScore``) is off.
* ``printError`` ends the process with ``sys.exit``: the resulting ``SystemExit`` is turned into
  :class:`OfficialEvaluatorError` carrying the printed message.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

PIXEL_EVALUATOR = "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"
INSTANCE_EVALUATOR = "cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling"
CITY = "testcity"

InstancePrediction = tuple[np.ndarray, int, float]
"""One predicted instance: (H, W) binary mask, Cityscapes label id, confidence."""


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
def _official_evaluator(module_name: str, root: Path) -> Iterator[ModuleType]:
    """The evaluator module, importable and runnable with the shims of the module docstring in place."""
    output = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, "in1d", np.isin, raising=False)
        patch.setenv("CITYSCAPES_DATASET", str(root))
        patch.setenv("CITYSCAPES_RESULTS", str(root / "results"))
        patch.delenv("CITYSCAPES_EXPORT_DIR", raising=False)
        patch.chdir(root)
        module = importlib.import_module(module_name)
        patch.setattr(module, "writeDict2JSON", _write_dict_to_json)
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


def official_pixel_miou(
    pred_label_id_maps: Sequence[np.ndarray], gt_label_id_maps: Sequence[np.ndarray], tmp_dir: Path
) -> dict[str, Any]:
    """Official pixel-level evaluation of (H, W) label-id maps.

    Returns ``{"iou_per_class": {name: IoU of the 19 evaluated classes, NaN if absent}, "miou": averageScoreClasses}``.
    """
    root = Path(tmp_dir).resolve()
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

    with _official_evaluator(PIXEL_EVALUATOR, root) as evaluator:
        args = _quiet_args(evaluator, root)
        args.evalInstLevelScore = False
        args.evalPixelAccuracy = False
        result = evaluator.evaluateImgLists(prediction_files, ground_truth_files, args)
        evaluated_names = [label.name for label in evaluator.labels if not label.ignoreInEval and label.id >= 0]
    return {
        "iou_per_class": {name: float(result["classScores"][name]) for name in evaluated_names},
        "miou": float(result["averageScoreClasses"]),
    }


def official_instance_ap(
    predictions: Sequence[Sequence[InstancePrediction]],
    gt_instance_maps: Sequence[np.ndarray],
    tmp_dir: Path,
    min_region_size: int = 100,
) -> dict[str, Any]:
    """Official instance-level evaluation of per-image predictions against (H, W) instance-id maps.

    Returns ``{"ap", "ap50", "ap_per_class": {name: AP}, "ap50_per_class": {name: AP50}}`` (NaN for classes without
    evaluated ground truth).
    """
    root = Path(tmp_dir).resolve()
    results = root / "results"
    (results / "masks").mkdir(parents=True, exist_ok=True)
    prediction_files, ground_truth_files = [], []
    for index, (image_predictions, instance_map) in enumerate(zip(predictions, gt_instance_maps, strict=True)):
        instance_map = np.asarray(instance_map, dtype=np.uint16)
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

    with _official_evaluator(INSTANCE_EVALUATOR, root) as evaluator:
        args = _quiet_args(evaluator, root)
        args.csv = False
        args.distanceAvailable = False
        args.minRegionSizes = np.concatenate(([min_region_size], evaluator.args.minRegionSizes[1:]))
        args.gtInstancesFile = str(root / "gtInstances.json")
        args.predictionPath = str(results)
        args.predictionWalk = None
        result = evaluator.evaluateImgLists(prediction_files, ground_truth_files, args)
    averages = result["averages"]
    return {
        "ap": float(averages["allAp"]),
        "ap50": float(averages["allAp50%"]),
        "ap_per_class": {name: float(scores["ap"]) for name, scores in averages["classes"].items()},
        "ap50_per_class": {name: float(scores["ap50%"]) for name, scores in averages["classes"].items()},
    }
