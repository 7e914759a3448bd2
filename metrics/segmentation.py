"""Dataset-level semantic segmentation IoU (Cityscapes mIoU and moving-object mIoU)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from metrics.cityscapes_labels import IGNORE_TRAIN_ID, INSTANCE_TRAIN_IDS, NUM_EVALUATED_CLASSES

_MAX_JOINT_VALUES = 1024
"""Largest value range ``V`` of the joint-histogram path (a ``V * V`` bincount; 256 for trainIds)."""


class SegmentationIoU(Metric):
    """Per-class IoU accumulated over a whole dataset, its mean (mIoU) and its mean over moving objects (MO-mIoU).

    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` with pixel counts summed over all images (one confusion matrix, not a
    mean of per-image IoUs), as Cityscapes' ``evalPixelLevelSemanticLabeling``:

    * pixels whose target is ``ignore_index`` are left out entirely;
    * a predicted value outside ``[0, num_classes)`` (e.g. 255) is "no evaluated class": a false negative for the
      target class and a false positive for none (the official script's predictions of ignored label ids);
    * a class with ``TP + FP + FN = 0`` (absent from target and prediction) has IoU NaN and is left out of the means,
      like the official ``averageScoreClasses``; a mean over only-NaN classes is NaN.

    ``mo_miou`` is the mean over ``moving_object_classes`` (default: the trainIds of the 8 Cityscapes instance classes
    person, rider, car, truck, bus, train, motorcycle, bicycle).

    State: the ``(num_classes, num_classes + 1)`` int64 confusion matrix (rows target, columns prediction, last column
    "no evaluated class"), summed across processes. ``update(preds, target)`` takes ``(B, H, W)`` integer class
    predictions or ``(B, C, H, W)`` scores (reduced by argmax over C) and ``(B, H, W)`` integer targets whose values
    are in ``[0, num_classes)`` or ``ignore_index``. ``compute`` returns ``{"miou", "mo_miou", "iou_per_class"}``
    (float64 scalars and a ``(num_classes,)`` tensor).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int = NUM_EVALUATED_CLASSES,
        ignore_index: int = IGNORE_TRAIN_ID,
        moving_object_classes: Sequence[int] = INSTANCE_TRAIN_IDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} must lie outside the classes [0, {num_classes})")
        invalid = [c for c in moving_object_classes if not 0 <= c < num_classes]
        if invalid or not moving_object_classes:
            raise ValueError(f"moving_object_classes must be a non-empty subset of [0, {num_classes}), got {invalid}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.moving_object_classes = tuple(moving_object_classes)
        self.add_state(
            "confusion_matrix",
            torch.zeros(num_classes, num_classes + 1, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add ``(B, H, W)`` class predictions (or ``(B, C, H, W)`` scores) against ``(B, H, W)`` targets."""
        if preds.is_floating_point():
            if preds.dim() != 4:
                raise ValueError(f"score maps must have shape (B, C, H, W), got {tuple(preds.shape)}")
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise ValueError(f"predictions {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")
        if target.numel() == 0:
            return
        self.confusion_matrix += self._confusion(preds, target)

    def _confusion(self, preds: Tensor, target: Tensor) -> Tensor:
        """The ``(num_classes, num_classes + 1)`` confusion counts of one batch.

        When every value lies in ``[0, V)`` with ``V = max(num_classes, ignore_index + 1)`` (e.g. 256 for trainIds
        with 255 ignored), one ``bincount`` of ``target * V + preds`` gives the joint histogram (two min/max reads,
        one addition and one count over the pixels); its rows are then folded into the confusion matrix. Otherwise
        the general path maps ignored targets and out-of-range predictions first. Both give the same counts.
        """
        columns = self.num_classes + 1
        target_range, preds_range = torch.aminmax(target), torch.aminmax(preds)
        values = max(self.num_classes, self.ignore_index + 1)
        if self.ignore_index >= 0 and values <= _MAX_JOINT_VALUES and min(target_range.min, preds_range.min) >= 0 \
                and max(target_range.max, preds_range.max) < values:
            wide = torch.promote_types(torch.promote_types(preds.dtype, target.dtype), torch.int32)  # no uint8 wrap
            joint = torch.add(preds.to(wide), target.to(wide), alpha=values).flatten()
            histogram = torch.bincount(joint, minlength=values * values).view(values, values)
            unexpected = histogram[self.num_classes :].sum(dim=1).nonzero().squeeze(1) + self.num_classes
            if (unexpected != self.ignore_index).any():
                raise ValueError(f"target values must be in [0, {self.num_classes}) or {self.ignore_index}")
            counted = histogram[: self.num_classes]
            return torch.cat([counted[:, : self.num_classes], counted[:, self.num_classes :].sum(dim=1, keepdim=True)],
                             dim=1)
        # Ignored target pixels go to an extra row (dropped), predictions outside the classes to the last column.
        ignored = target == self.ignore_index
        smallest, largest = torch.aminmax(torch.where(ignored, 0, target))
        if smallest < 0 or largest >= self.num_classes:
            raise ValueError(f"target values must be in [0, {self.num_classes}) or {self.ignore_index}")
        rows = torch.where(ignored, self.num_classes, target.long())
        preds = preds.long()
        preds = torch.where((preds >= 0) & (preds < self.num_classes), preds, self.num_classes)
        counts = torch.bincount((rows * columns + preds).flatten(), minlength=columns * columns)
        return counts[: self.num_classes * columns].view(self.num_classes, columns)

    def compute(self) -> dict[str, Tensor]:
        """``{"miou": mean IoU, "mo_miou": mean IoU over moving objects, "iou_per_class": (num_classes,)}``."""
        confusion = self.confusion_matrix.to(torch.float64)
        true_positive = confusion.diagonal()
        target_total = confusion.sum(dim=1)
        predicted_total = confusion[:, : self.num_classes].sum(dim=0)
        union = target_total + predicted_total - true_positive
        iou_per_class = torch.where(union > 0, true_positive / union.clamp(min=1), torch.nan)
        moving = torch.tensor(self.moving_object_classes, device=iou_per_class.device)
        return {
            "miou": iou_per_class.nanmean(),
            "mo_miou": iou_per_class[moving].nanmean(),
            "iou_per_class": iou_per_class,
        }
