"""SemanticSegmenter: the per-frame Cityscapes segmenter whose class scores the S2S forecasters read and predict.

Luc et al. (ICCV 2017) forecast the pre-softmax class scores of a semantic segmentation network (Dilation10 in the
paper) for future frames: the segmenter's scores of the past frames are the inputs, its scores of the future frames
are the targets, and its segmentation of the annotated frame is a second reference besides the ground truth. This
module trains a :class:`networks.segmenter.SegmentationNetwork` on the annotated Cityscapes frames, or on every frame
of the demo set, which labels them all, and exports its weights to a small self-describing file that the score
extraction and the forecasters load by path (:func:`networks.segmenter.load_exported_segmenter`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.augment import to_unit_range
from datamodules.prediction import sample_names, target_names
from lightning_modules.stage_training import export_for_next_stage, planned_steps, poly_decay
from lightning_modules.visuals import image_grid, log_image, log_segmentation_masks
from metrics.cityscapes_labels import IGNORE_TRAIN_ID, NUM_EVALUATED_CLASSES, TRAIN_ID_NAMES, colorize
from metrics.segmentation import SegmentationIoU
from networks.segmenter import (
    Architecture,
    SegmentationNetwork,
    export_segmenter,
    load_backbone_weights,
    load_exported_segmenter,
)

GRID_IMAGES = 4
"""Validation images shown in the logged input / prediction / ground-truth grid."""


class SemanticSegmenter(L.LightningModule):
    """Trains a torchvision segmentation network on Cityscapes trainIds and exports it for the forecasters.

    Batches come from :class:`datamodules.cityscapes.CityscapesSequenceDataModule`: the annotated frame
    (``frames[:, -1]``) with its ``labels``, or, when the batch carries ``frame_labels`` (the demo set labels every
    frame), every frame of the window with its labels, in training and validation alike. Loss: cross-entropy
    ignoring ``ignore_index``; AdamW with the poly decay ``lr * (1 - step / total) ** 0.9`` per step. Validation logs
    ``val/loss``, ``val/miou`` and ``val/mo_miou`` (:class:`metrics.segmentation.SegmentationIoU`) and a grid of
    input / prediction / ground truth rows.

    Args:
        architecture: torchvision segmentation network (built with ``weights=None, weights_backbone=None``).
        weights: a file exported by this module to start from (fine-tuning, or resuming on other data).
        backbone_weights: local torchvision ImageNet classifier file for the backbone; ``None`` starts from scratch.
        export_path: where ``on_fit_end`` writes the weights file; default ``<default_root_dir>/segmenter.pt``.
    """

    def __init__(self, architecture: Architecture = "deeplabv3_resnet50", num_classes: int = NUM_EVALUATED_CLASSES,
                 lr: float = 1e-3, weight_decay: float = 1e-4, weights: str | None = None,
                 backbone_weights: str | None = None, export_path: str | None = None,
                 ignore_index: int = IGNORE_TRAIN_ID) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.network = SegmentationNetwork(architecture, num_classes)
        if backbone_weights is not None:
            load_backbone_weights(self.network, backbone_weights)
        if weights is not None:
            exported = load_exported_segmenter(weights, architecture=architecture)
            if exported.num_classes != num_classes:
                raise ValueError(f"{weights} predicts {exported.num_classes} classes; this segmenter has {num_classes}")
            self.network.load_state_dict(exported.state_dict())
        self.val_iou = SegmentationIoU(num_classes=num_classes, ignore_index=ignore_index)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (B, num_classes, H, W) of images (B, 3, H, W) in [-1, 1]."""
        return self.network(images)

    @staticmethod
    def images_and_labels(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Images in [-1, 1] (N, 3, h, w) and int64 trainIds (N, h, w) of a batch: every labelled frame."""
        if "frame_labels" in batch:
            return to_unit_range(batch["frames"].flatten(0, 1)), batch["frame_labels"].flatten(0, 1).long()
        return to_unit_range(batch["frames"][:, -1]), batch["labels"].long()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, labels = self.images_and_labels(batch)
        loss = F.cross_entropy(self(images), labels, ignore_index=self.hparams.ignore_index)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        images, labels = self.images_and_labels(batch)
        logits = self(images)
        loss = F.cross_entropy(logits, labels, ignore_index=self.hparams.ignore_index)
        self.log("val/loss", loss, batch_size=len(images))
        predictions = logits.argmax(dim=1)
        self.val_iou.update(predictions, labels)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_grid(images[:GRID_IMAGES], predictions[:GRID_IMAGES], labels[:GRID_IMAGES])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """The segmentation of each sample's last frame (the annotated one of Cityscapes snippets).

        Returns ``{"name": list[str] (B), "steps": [0] (the observed frame, no forecast), "target_names":
        list[list[str]] (B, 1), "segmentation": int64 (B, 1, h, w) trainIds on the CPU}``, the layout of the
        forecasters' predictions.
        """
        segmentation = self(to_unit_range(batch["frames"][:, -1])).argmax(dim=1)
        return {"name": sample_names(batch), "steps": [0], "target_names": target_names(batch, 1),
                "segmentation": segmentation[:, None].cpu()}

    def on_validation_epoch_end(self) -> None:
        scores = self.val_iou.compute()
        self.log_dict({"val/miou": scores["miou"].float(), "val/mo_miou": scores["mo_miou"].float()}, prog_bar=True)
        self.val_iou.reset()

    def _log_grid(self, images: Tensor, predictions: Tensor, labels: Tensor) -> None:
        """Rows: input frames, predicted segmentations, ground truth (ignored pixels black)."""
        inputs = ((images.detach().float() + 1) * 127.5).round()
        tiles = torch.cat([inputs, colorize(predictions).float(), colorize(labels).float()])
        log_image(self.trainer, "val/input|prediction|ground_truth", image_grid(tiles, nrow=len(images),
                                                                                value_range=(0.0, 255.0)),
                  caption=f"step {self.global_step}")
        log_segmentation_masks(self.trainer, "val/segmentation", images[0],
                               {"prediction": predictions[0], "ground truth": labels[0]}, TRAIN_ID_NAMES)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = planned_steps(self.trainer)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: poly_decay(step, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_end(self) -> None:
        export_for_next_stage(self, lambda path: export_segmenter(self.network, path), "segmenter.pt")
