"""Cityscapes instance-level average precision (AP and AP50), computed in process on the masks' device.

The algorithm is that of ``cityscapesscripts/evaluation/evalInstanceLevelSemanticLabeling.py`` (without the
distance-based variants), re-implemented on tensors: per image, the ground-truth map is turned into a map of segment columns (one per
ground-truth segment of an evaluated class, one for void, one for the rest) and :func:`mask_label_counts` counts every
prediction's pixels per column (integer histograms over each mask's bounding box, or one ``bincount`` of
(mask, column) pairs on accelerators) instead of dense full-resolution products. Every prediction/segment
intersection, void intersection and prediction area follows, and the official matching is derived from them for all
overlap thresholds at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from metrics.cityscapes_labels import INSTANCE_ID_OFFSET, INSTANCE_LABEL_IDS, VOID_LABEL_IDS, instance_ids_to_label_ids

DEFAULT_OVERLAPS: tuple[float, ...] = tuple(np.arange(0.5, 1.0, 0.05).tolist())
"""The official overlap thresholds 0.5, 0.55, ..., 0.95 (the same floats as the official ``args.overlaps``)."""

TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1
"""Outcome codes of a prediction at one overlap threshold."""


class CityscapesInstanceAP(Metric):
    """Cityscapes instance-level AP: per class, AP averaged over overlap thresholds; ``ap`` averages the classes.

    Per image (ground truth: an instance-id map, ``label_id * 1000 + k`` for instances and the plain label id
    elsewhere; predictions: binary masks with a label id and a confidence), for each class and overlap threshold
    ``t`` (IoU must be strictly greater than ``t``):

    * ground-truth **segments** of a class are all its instances plus its "group" (crowd) region, the pixels holding
      the plain label id. Only instances (id >= 1000) with at least ``min_region_size`` pixels are **evaluated**
      ground truth; they alone count in the recall denominator.
    * predictions of other label ids and empty masks are dropped; there is no size filter on predictions
      (the official script filters only the ground truth).
    * an evaluated instance overlapped by several predictions with IoU > ``t`` keeps the highest-scoring one as a
      true positive; each other one is a false positive (official: each extra match appends a false positive with
      the lower of the two scores, which leaves the same set of scores).
    * a prediction whose IoU with every segment of its class is at most ``t`` is a false positive unless its
      **ignore fraction** exceeds ``t``: ``(void pixels + pixels on group regions of its class + pixels on segments of
      its class smaller than min_region_size) / prediction pixels``, so a too-small group region counts twice, as in
      the official code. Void pixels hold the plain id (< 1000) of a label with ``ignoreInEval``; like the official
      code, instances of ignored classes (caravan, trailer: ids >= 1000) are not void.
    * a prediction with IoU > ``t`` with a group region or a too-small instance only is ignored.

    With ``t >= 0.5`` (enforced) a prediction can exceed ``t`` with at most one of the disjoint segments, so each
    prediction has one outcome per threshold: true positive, false positive or ignored.

    AP of a class at ``t`` (official curve and integration): scores sorted, one precision/recall point per distinct
    score ``s`` with ``precision = TP(>=s) / (TP(>=s) + FP(>=s))`` and ``recall = TP(>=s) / N_gt``, plus an artificial
    point (recall 0, precision 1); with the points in increasing recall ``r_0 = 0 <= r_1 <= ... <= r_m`` the AP is
    ``sum_j p_j (r_{j+1} - r_{j-1}) / 2`` with ``r_{-1} = 0`` and ``r_{m+1} = r_m``. A class without evaluated ground
    truth has AP NaN and is left out of the means; one with ground truth but no prediction has AP 0. Where the
    official script would crash (ground truth and predictions of the class exist, but every prediction is ignored
    and nothing is matched) the AP is 0.

    States: per image, list states (``dist_reduce_fx="cat"``, so ranks gather their records) of the kept
    predictions' ``pred_scores`` (P,) float64, ``pred_class_indices`` (P,) int64 (index into ``class_ids``) and
    ``pred_outcomes`` (P, T) int8 (:data:`TRUE_POSITIVE`, :data:`FALSE_POSITIVE`, :data:`IGNORED`); and the summed
    ``num_ground_truth`` (K,) count of evaluated instances per class. Records are order-independent, so any split of
    the images across ranks gives the same result. Every rank must have seen at least one image when syncing (the
    distributed sampler guarantees it). Pixel counts are exact integers.

    ``compute`` returns float64 tensors ``{"ap", "ap50", "ap_per_class", "ap50_per_class"}`` (per class in
    ``class_ids`` order).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        class_ids: Sequence[int] | None = None,
        min_region_size: int = 100,
        overlaps: Sequence[float] = DEFAULT_OVERLAPS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        class_ids = tuple(INSTANCE_LABEL_IDS if class_ids is None else (int(c) for c in class_ids))
        if not class_ids or len(set(class_ids)) != len(class_ids) or min(class_ids) < 0:
            raise ValueError(f"class_ids must be distinct non-negative label ids, got {class_ids}")
        overlaps = tuple(float(t) for t in overlaps)
        if not overlaps or not all(0.5 <= t < 1.0 for t in overlaps):
            raise ValueError(f"overlaps must lie in [0.5, 1) (the official matching needs it), got {overlaps}")
        if not np.isclose(overlaps, 0.5).any():
            raise ValueError(f"overlaps must contain 0.5 for AP50, got {overlaps}")
        self.class_ids = class_ids
        self.min_region_size = min_region_size
        self.overlaps = overlaps
        self.add_state("pred_scores", [], dist_reduce_fx="cat")
        self.add_state("pred_class_indices", [], dist_reduce_fx="cat")
        self.add_state("pred_outcomes", [], dist_reduce_fx="cat")
        self.add_state("num_ground_truth", torch.zeros(len(class_ids), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[dict[str, Tensor]], targets: Sequence[Tensor]) -> None:
        """Match one batch of images.

        Args:
            predictions: per image ``{"masks": (N, H, W) bool, "labels": (N,) label ids, "scores": (N,) finite}``.
            targets: per image an (H, W) integer instance-id map (``label_id * 1000 + k``, plain ids below 1000).
        """
        if len(predictions) != len(targets):
            raise ValueError(f"got {len(predictions)} predictions for {len(targets)} targets")
        for prediction, target in zip(predictions, targets):
            scores, class_indices, outcomes, num_ground_truth = self._match_image(
                prediction["masks"], prediction["labels"], prediction["scores"], target
            )
            self.pred_scores.append(scores)
            self.pred_class_indices.append(class_indices)
            self.pred_outcomes.append(outcomes)
            self.num_ground_truth += num_ground_truth

    def _match_image(
        self, masks: Tensor, labels: Tensor, scores: Tensor, instance_ids: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Outcome of every kept prediction at every threshold, and the number of evaluated instances per class."""
        device = masks.device
        height, width = instance_ids.shape
        if masks.dim() != 3 or masks.shape[1:] != (height, width):
            raise ValueError(f"masks must have shape (N, {height}, {width}), got {tuple(masks.shape)}")
        if labels.shape != masks.shape[:1] or scores.shape != masks.shape[:1]:
            raise ValueError("labels and scores must have one entry per mask")
        if not torch.isfinite(scores).all():
            raise ValueError("scores must be finite")
        class_ids = torch.tensor(self.class_ids, device=device)
        thresholds = torch.tensor(self.overlaps, dtype=torch.float64, device=device)
        num_classes = len(self.class_ids)

        instance_ids = instance_ids.to(device)
        id_area = label_areas(instance_ids)
        present_ids = id_area.nonzero().squeeze(1)
        segment_class_match = instance_ids_to_label_ids(present_ids)[:, None] == class_ids[None, :]
        is_class_segment = segment_class_match.any(dim=1)
        segment_ids = present_ids[is_class_segment]
        segment_class = segment_class_match[is_class_segment].long().argmax(dim=1)
        segment_area = id_area[segment_ids]
        num_segments = segment_ids.numel()

        is_instance = segment_ids >= INSTANCE_ID_OFFSET
        is_small = segment_area < self.min_region_size
        is_evaluated = is_instance & ~is_small
        num_ground_truth = torch.bincount(segment_class[is_evaluated], minlength=num_classes)

        # One column per class segment, one for void pixels and one for every other pixel: each pixel lies in exactly
        # one column, so a prediction's counts sum to its area.
        void_column, other_column = num_segments, num_segments + 1
        column_of_id = torch.full_like(id_area, other_column)
        void_ids = torch.tensor([i for i in VOID_LABEL_IDS if 0 <= i < id_area.numel()], dtype=torch.long)
        column_of_id[void_ids.to(device)] = void_column
        column_of_id[segment_ids] = torch.arange(num_segments, device=device)
        # Predictions of other classes are dropped before counting (indexing copies the masks, hence the test).
        pred_class_match = labels.to(device).long()[:, None] == class_ids[None, :]
        pred_scores = scores.to(device=device, dtype=torch.float64)
        of_class = pred_class_match.any(dim=1)
        if not bool(of_class.all()):
            masks, pred_class_match, pred_scores = masks[of_class], pred_class_match[of_class], pred_scores[of_class]
        masks = masks if masks.dtype == torch.bool else masks != 0
        counts = mask_label_counts(masks, instance_ids, num_segments + 2, label_map=column_of_id)
        pred_area = counts.sum(dim=1)
        kept = pred_area > 0
        counts, pred_area = counts[kept], pred_area[kept]
        pred_class = pred_class_match[kept].long().argmax(dim=1)
        pred_scores = pred_scores[kept]
        num_predictions = pred_scores.numel()
        if num_predictions == 0:
            outcomes = torch.empty(0, len(self.overlaps), dtype=torch.int8, device=device)
            return pred_scores, pred_class, outcomes, num_ground_truth

        void_intersection = counts[:, void_column]
        same_class = pred_class[:, None] == segment_class[None, :]
        intersection = torch.where(same_class, counts[:, :num_segments], 0)

        union = pred_area[:, None] + segment_area[None, :] - intersection
        iou = intersection.double() / union.double()
        above = iou[:, :, None] > thresholds
        above_evaluated = above & is_evaluated[None, :, None]
        candidate_scores = torch.where(above_evaluated, pred_scores[:, None, None], -torch.inf)
        best_prediction = candidate_scores.argmax(dim=0)
        instance_matched = above_evaluated.any(dim=0)
        prediction_index = torch.arange(num_predictions, device=device)[:, None, None]
        true_positive = ((prediction_index == best_prediction[None]) & instance_matched[None]).any(dim=1)
        duplicate = above_evaluated.any(dim=1) & ~true_positive

        # A group region counts once, a too-small segment once more (so a too-small group region twice).
        ignore_weight = (~is_instance).long() + is_small.long()
        ignore_pixels = void_intersection + (intersection * ignore_weight).sum(dim=1)
        ignore_fraction = ignore_pixels.double() / pred_area.double()
        unmatched_counted = ~above.any(dim=1) & (ignore_fraction[:, None] <= thresholds)

        outcomes = torch.full((num_predictions, len(self.overlaps)), IGNORED, dtype=torch.int8, device=device)
        outcomes[duplicate | unmatched_counted] = FALSE_POSITIVE
        outcomes[true_positive] = TRUE_POSITIVE
        return pred_scores, pred_class, outcomes, num_ground_truth

    def compute(self) -> dict[str, Tensor]:
        """``{"ap", "ap50", "ap_per_class", "ap50_per_class"}`` from the accumulated records (float64 tensors)."""
        num_classes, num_overlaps = len(self.class_ids), len(self.overlaps)
        scores = _concatenated(self.pred_scores, torch.float64)
        class_indices = _concatenated(self.pred_class_indices, torch.long)
        outcomes = _concatenated(self.pred_outcomes, torch.int8).reshape(-1, num_overlaps)
        num_ground_truth = self.num_ground_truth.cpu().numpy()

        ap = np.full((num_classes, num_overlaps), np.nan)
        for class_index in range(num_classes):
            if num_ground_truth[class_index] == 0:
                continue
            in_class = class_indices == class_index
            for overlap_index in range(num_overlaps):
                counted = outcomes[in_class, overlap_index] != IGNORED
                ap[class_index, overlap_index] = average_precision(
                    scores[in_class][counted],
                    outcomes[in_class, overlap_index][counted] == TRUE_POSITIVE,
                    int(num_ground_truth[class_index]),
                )
        ap_per_class = ap.mean(axis=1)
        ap50_per_class = ap[:, int(np.flatnonzero(np.isclose(self.overlaps, 0.5))[0])]
        return {
            "ap": torch.tensor(_mean_of_defined(ap_per_class), dtype=torch.float64),
            "ap50": torch.tensor(_mean_of_defined(ap50_per_class), dtype=torch.float64),
            "ap_per_class": torch.from_numpy(ap_per_class),
            "ap50_per_class": torch.from_numpy(ap50_per_class),
        }


def average_precision(scores: np.ndarray, is_true_positive: np.ndarray, num_ground_truth: int) -> float:
    """Official Cityscapes AP of counted detections (true and false positives) against ``num_ground_truth`` instances.

    One precision/recall point per distinct score (detections scoring at least that score), plus the artificial
    point (recall 0, precision 1); step-wise integration with each point weighted by half the recall gap between
    its neighbours (see :class:`CityscapesInstanceAP`). No detection gives 0.
    """
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    true_positives = np.cumsum(is_true_positive[order])
    false_positives = np.cumsum(~is_true_positive[order])
    last_of_score = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    true_positives, false_positives = true_positives[last_of_score], false_positives[last_of_score]
    precision = np.concatenate(([1.0], true_positives / (true_positives + false_positives)))
    recall = np.concatenate(([0.0], true_positives / num_ground_truth))
    previous_recall = np.concatenate(([0.0], recall[:-1]))
    next_recall = np.concatenate((recall[1:], recall[-1:]))
    return float(np.dot(precision, (next_recall - previous_recall) / 2))


def _concatenated(records: list[Tensor] | Tensor, dtype: torch.dtype) -> np.ndarray:
    """A list state (or its synced, concatenated tensor) as one numpy array; empty when nothing was recorded."""
    if isinstance(records, list) and not records:
        return torch.empty(0, dtype=dtype).numpy()
    return dim_zero_cat(records).to(dtype).cpu().numpy()


def _mean_of_defined(values: np.ndarray) -> float:
    """Mean over the non-NaN entries (NaN when there are none), like the official ``np.nanmean`` without warning."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


CountStrategy = Literal["boxes", "nonzero"]
_NONZERO_CHUNK_PIXELS = 2**24
"""The ``"nonzero"`` strategy takes masks in chunks of at most this many pixels (bounds its index memory)."""


def mask_label_counts(
    masks: Tensor,
    labels: Tensor,
    num_labels: int,
    label_map: Tensor | None = None,
    strategy: CountStrategy | None = None,
) -> Tensor:
    """``counts[n, c]``: the number of pixels where ``masks[n]`` is true and the (mapped) label equals ``c``.

    Args:
        masks: (N, H, W) bool.
        labels: (H, W) non-negative integers, on the masks' device: the columns themselves (in ``[0, num_labels)``)
            or, with ``label_map``, values that it maps to columns.
        num_labels: number of columns of the result.
        label_map: optional (L,) integer table, ``label_map[v]`` in ``[0, num_labels)`` the column of label ``v``
            (``L`` above every label); it is looked up at mask pixels only, never over the whole map.
        strategy: ``None`` picks ``"boxes"`` on the CPU and ``"nonzero"`` elsewhere; both give the same integers.

    * ``"boxes"``: each mask's rows are read as 64-bit words (8 pixels a load) to find its row band, the band's words
      give its column range, and only the labels inside that box and under the mask are counted. The work is one
      pass over the masks plus the boxes' areas, instead of N x H x W products.
    * ``"nonzero"``: the coordinates of every mask pixel and one ``bincount`` of (mask, label) pairs, without a host
      synchronisation per mask (for accelerators).

    Returns:
        (N, num_labels) int64 on the masks' device.
    """
    if masks.dim() != 3 or labels.shape != masks.shape[1:] or masks.dtype != torch.bool:
        raise ValueError(f"expected bool masks (N, H, W) and labels (H, W), got {masks.dtype} {tuple(masks.shape)} "
                         f"and {tuple(labels.shape)}")
    strategy = strategy or ("boxes" if masks.device.type == "cpu" else "nonzero")
    if strategy == "boxes":
        lookup = None if label_map is None else label_map.cpu().numpy()
        return _box_counts(masks.cpu(), labels.cpu(), num_labels, lookup).to(masks.device)
    if strategy == "nonzero":
        return _nonzero_counts(masks, labels, num_labels, label_map)
    raise ValueError(f"unknown strategy {strategy!r}; expected 'boxes' or 'nonzero'")


def _row_words(masks: Tensor) -> Tensor | None:
    """(N, H, W / 8) int64 view of contiguous bool masks (each word holds 8 pixels of 0/1 bytes), None if W % 8."""
    if masks.shape[2] % 8 or not masks.is_contiguous() or masks.storage_offset() % 8:
        return None
    return masks.view(torch.uint8).view(torch.int64)


def _box_counts(masks: Tensor, labels: Tensor, num_labels: int, lookup: np.ndarray | None) -> Tensor:
    """The ``"boxes"`` strategy of :func:`mask_label_counts` on CPU tensors."""
    num_masks = masks.shape[0]
    counts = np.zeros((num_masks, num_labels), dtype=np.int64)
    if masks.numel() == 0:
        return torch.from_numpy(counts)
    masks = masks.contiguous()
    words = _row_words(masks)
    # Words of 0/1 bytes are never negative, so a row holds a pixel exactly when its largest word is positive.
    rows_hit = (words.amax(dim=2) > 0 if words is not None else masks.any(dim=2)).numpy()
    mask_array, label_array = masks.numpy(), labels.contiguous().numpy()
    word_array = None if words is None else words.numpy()
    for index in range(num_masks):
        hit_rows = np.flatnonzero(rows_hit[index])
        if hit_rows.size == 0:
            continue
        top, bottom = hit_rows[0], hit_rows[-1] + 1
        if word_array is None:
            hit_columns = np.flatnonzero(mask_array[index, top:bottom].any(axis=0))
            left, right = hit_columns[0], hit_columns[-1] + 1
        else:  # column range rounded out to whole words: a box that holds the mask is all that is needed
            hit_words = np.flatnonzero(word_array[index, top:bottom].max(axis=0))
            left, right = 8 * hit_words[0], 8 * (hit_words[-1] + 1)
        box = (slice(top, bottom), slice(left, right))
        values = label_array[box][mask_array[index][box]]
        counts[index] = np.bincount(values if lookup is None else lookup[values], minlength=num_labels)
    return torch.from_numpy(counts)


def _nonzero_counts(masks: Tensor, labels: Tensor, num_labels: int, label_map: Tensor | None) -> Tensor:
    """The ``"nonzero"`` strategy of :func:`mask_label_counts` (any device)."""
    num_masks, height, width = masks.shape
    flat_masks = masks.reshape(num_masks, height * width)
    flat_labels = labels.reshape(-1).long()
    counts = torch.zeros(num_masks * num_labels, dtype=torch.long, device=masks.device)
    chunk = max(1, _NONZERO_CHUNK_PIXELS // max(1, flat_masks.shape[1]))
    for start in range(0, num_masks, chunk):
        mask_index, pixel = flat_masks[start : start + chunk].nonzero(as_tuple=True)
        values = flat_labels[pixel]
        pairs = (mask_index + start) * num_labels + (values if label_map is None else label_map.long()[values])
        counts += torch.bincount(pairs, minlength=num_masks * num_labels)
    return counts.view(num_masks, num_labels)


def label_areas(labels: Tensor) -> Tensor:
    """``areas[v]``: the number of pixels of label ``v`` in a map of non-negative integers, (max + 1,) int64 (empty
    for an empty map); negative labels raise ``ValueError``.

    On the CPU the row-major map is read as runs of equal values (one comparison of neighbours, then a weighted
    count of the runs' values: label maps have few runs per row), elsewhere it is one ``bincount``.
    """
    if labels.device.type != "cpu":
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError("labels must be non-negative")
        return torch.bincount(labels.reshape(-1).long())
    flat = labels.contiguous().numpy().reshape(-1)
    if flat.size == 0:
        return torch.zeros(0, dtype=torch.long)
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    values = flat[starts].astype(np.int64)
    if values.min() < 0:
        raise ValueError("labels must be non-negative")
    lengths = np.diff(np.append(starts, flat.size))
    # Float64 weights are exact for run lengths (below 2**53 pixels).
    return torch.from_numpy(np.bincount(values, weights=lengths).astype(np.int64))
