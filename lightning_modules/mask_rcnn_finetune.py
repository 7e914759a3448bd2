"""MaskRCNNFinetune: stage 1 of F2F (Luc et al., ECCV 2018), the Cityscapes instance detector.

F2F fine-tunes a COCO-initialised Mask R-CNN ResNet-50-FPN on the 8 Cityscapes instance classes; its FPN features
are what the F2F forecaster predicts, and its frozen heads turn forecast features into instance segmentations. This
module trains the detector of :mod:`networks.detector` on Cityscapes sequence batches, reports its instance AP on
the annotated frames (the "oracle" row of F2F's results: the detector run on the real future frame), and exports its
weights with a description of its architecture to a file that the forecaster loads with
:func:`networks.detector.load_exported_detector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from cityscapesscripts.helpers.labels import id2label
from torch import Tensor

from datamodules.prediction import sample_names, target_names
from lightning_modules.stage_training import export_for_next_stage, planned_steps, poly_decay
from lightning_modules.visuals import image_grid, instance_class_map, log_image, log_segmentation_masks
from metrics.cityscapes_labels import INSTANCE_ID_OFFSET, TRAIN_ID_NAMES
from metrics.instance_ap import CityscapesInstanceAP
from networks.detector import (
    BOX_HEAD_SIZE,
    DEFAULT_ANCHOR_SIZES,
    MASK_HEAD_CHANNELS,
    NUM_DETECTOR_CLASSES,
    Backbone,
    BackboneNorm,
    build_mask_rcnn,
    detect,
    export_detector,
    instances_to_targets,
    load_coco_weights,
)

WARMUP_START_FACTOR = 0.001
"""Learning-rate factor at step 0 of the linear warm-up (Detectron's default)."""
GRID_IMAGES = 4
"""Validation frames shown in the logged frame / detections / ground-truth grid."""
GRID_SCORE_THRESHOLD = 0.5
"""Detections drawn in the grid score at least this."""
OVERLAY_ALPHA = 0.5


class MaskRCNNFinetune(L.LightningModule):
    """Trains a Mask R-CNN on Cityscapes instances and exports it for the F2F forecaster.

    Batches come from :class:`datamodules.cityscapes.CityscapesSequenceDataModule` with instances: training uses
    the annotated frame (``frames[:, -1]`` with ``instances``) or, when the batch carries ``frame_instances`` (the
    demo set labels every frame), the frames of the window (see ``frames_per_window``); frames are flipped horizontally at random. Targets are
    built by :func:`networks.detector.instances_to_targets`. Loss: the sum of torchvision's five Mask R-CNN losses;
    SGD with a linear warm-up over ``warmup_steps`` then the poly decay ``(1 - step / total) ** 0.9``. Validation
    runs :func:`networks.detector.detect` on the annotated frame and logs ``val/ap`` and ``val/ap50``
    (:class:`metrics.instance_ap.CityscapesInstanceAP`) and a grid of frames, detections and ground truth.

    Args:
        backbone, num_classes, min_size, max_size, trainable_backbone_layers, backbone_norm, anchor_sizes,
            box_head_size, mask_head_channels, box_batch_size_per_image: the detector, see
            :func:`networks.detector.build_mask_rcnn`.
        frames_per_window: with ``frame_instances``, train on this many frames of each window drawn at random per
            step (``None``: all of them); consecutive frames are much alike, so fewer frames per step buy more
            steps for the same compute.
        coco_weights: local torchvision COCO Mask R-CNN state dict to start from (class-specific predictors are
            re-initialised); ``None`` trains from scratch (then use ``backbone_norm="batch"``).
        export_path: where ``on_fit_end`` writes the detector file; default ``<default_root_dir>/detector.pt``.
        min_instance_pixels: smaller ground-truth instances are not training targets.
        min_region_size: smallest evaluated ground-truth instance of the AP (the official 100 pixels at 1024x2048).
        seed: seeds the random flips (a function of the seed and the global step, so resumed runs repeat them).
    """

    def __init__(self, backbone: Backbone = "resnet50", num_classes: int = NUM_DETECTOR_CLASSES, min_size: int = 1024,
                 max_size: int = 2048, coco_weights: str | None = None, lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 1e-4, warmup_steps: int = 200, export_path: str | None = None,
                 trainable_backbone_layers: int = 3, backbone_norm: BackboneNorm = "frozen",
                 anchor_sizes: Sequence[int] = DEFAULT_ANCHOR_SIZES, box_head_size: int = BOX_HEAD_SIZE,
                 mask_head_channels: int = MASK_HEAD_CHANNELS, box_batch_size_per_image: int = 512,
                 frames_per_window: int | None = None, min_instance_pixels: int = 10, min_region_size: int = 100,
                 seed: int = 0) -> None:
        super().__init__()
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative, got {warmup_steps}")
        if frames_per_window is not None and frames_per_window <= 0:
            raise ValueError(f"frames_per_window must be positive or None, got {frames_per_window}")
        self.save_hyperparameters()
        self.detector = build_mask_rcnn(backbone, num_classes, min_size, max_size, trainable_backbone_layers,
                                        backbone_norm, anchor_sizes, box_head_size, mask_head_channels,
                                        box_batch_size_per_image)
        if coco_weights is not None:
            load_coco_weights(self.detector, coco_weights)
        self.val_ap = CityscapesInstanceAP(min_region_size=min_region_size)

    def training_images_and_targets(self, batch: dict[str, Tensor]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        """Images in [0, 1] and torchvision targets of the labelled frames of a batch, randomly flipped.

        Every frame of each window when the batch has ``frame_instances`` (or ``frames_per_window`` of them drawn
        at random), otherwise the annotated frame.
        """
        frames = batch["frames"]
        generator = torch.Generator(device=frames.device).manual_seed(
            self.hparams.seed * 1_000_003 + self.global_step)
        if "frame_instances" in batch:
            instances, count = batch["frame_instances"], self.hparams.frames_per_window
            if count is not None and count < frames.shape[1]:
                scores = torch.rand(frames.shape[:2], generator=generator, device=frames.device)
                chosen = scores.argsort(dim=1)[:, :count]
                windows = torch.arange(len(frames), device=frames.device)[:, None]
                frames, instances = frames[windows, chosen], instances[windows, chosen]
            frames, instances = frames.flatten(0, 1), instances.flatten(0, 1)
        else:
            frames, instances = frames[:, -1], batch["instances"]
        flip = torch.rand(len(frames), generator=generator, device=frames.device) < 0.5
        frames = torch.where(flip[:, None, None, None], frames.flip(-1), frames)
        instances = torch.where(flip[:, None, None], instances.flip(-1), instances)
        images = list(frames.float() / 255)
        targets = [instances_to_targets(ids, self.hparams.min_instance_pixels) for ids in instances]
        return images, targets

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, targets = self.training_images_and_targets(batch)
        losses = self.detector(images, targets)
        loss = sum(losses.values())
        self.log_dict({f"train/{name}": value for name, value in losses.items()}, batch_size=len(images))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        frames = batch["frames"][:, -1]
        predictions = detect(self.detector, frames)
        self.val_ap.update(predictions, batch["instances"])
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_grid(frames[:GRID_IMAGES], predictions[:GRID_IMAGES], batch["instances"][:GRID_IMAGES])

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        """The detections of each sample's last frame (the annotated one of Cityscapes snippets), as in validation.

        Returns ``{"name": list[str] (B), "steps": [0] (the observed frame, no forecast), "target_names":
        list[list[str]] (B, 1), "instances": list[list[dict]] (B, 1)}``: the layout of
        :meth:`lightning_modules.F2FForecaster.predict_step`, instance dicts (on the CPU) as
        :func:`networks.detector.detect` returns them.
        """
        detections = detect(self.detector, batch["frames"][:, -1])
        return {"name": sample_names(batch), "steps": [0], "target_names": target_names(batch, 1),
                "instances": [[{key: value.cpu() for key, value in detection.items()}] for detection in detections]}

    def on_validation_epoch_end(self) -> None:
        scores = self.val_ap.compute()
        self.log_dict({"val/ap": scores["ap"].float(), "val/ap50": scores["ap50"].float()}, prog_bar=True)
        self.val_ap.reset()

    def _log_grid(self, frames: Tensor, predictions: list[dict[str, Tensor]], instances: Tensor) -> None:
        """Rows: the frames, detections scoring at least 0.5, ground-truth instances (class colours, shaded)."""
        detected, ground_truth = [], []
        for frame, prediction, ids in zip(frames, predictions, instances):
            confident = prediction["scores"] >= GRID_SCORE_THRESHOLD
            order = prediction["scores"][confident].argsort()
            detected.append(overlay_instances(frame, prediction["masks"][confident][order],
                                              prediction["labels"][confident][order]))
            present = ids.unique()
            present = present[present >= INSTANCE_ID_OFFSET]
            ground_truth.append(overlay_instances(frame, ids[None] == present[:, None, None],
                                                  present // INSTANCE_ID_OFFSET))
        tiles = torch.cat([frames, torch.stack(detected), torch.stack(ground_truth)]).float()
        log_image(self.trainer, "val/frame|detections|ground_truth",
                  image_grid(tiles, nrow=len(frames), value_range=(0.0, 255.0)), caption=f"step {self.global_step}")
        present = instances[0].unique()
        present = present[present >= INSTANCE_ID_OFFSET]
        log_segmentation_masks(self.trainer, "val/detections", frames[0], {
            "detections": instance_class_map(predictions[0]["masks"], predictions[0]["labels"],
                                             predictions[0]["scores"], GRID_SCORE_THRESHOLD),
            "ground truth": instance_class_map(instances[0][None] == present[:, None, None],
                                               present // INSTANCE_ID_OFFSET)}, TRAIN_ID_NAMES, value_range=(0.0, 255.0))

    def configure_optimizers(self) -> Any:
        parameters = [parameter for parameter in self.detector.parameters() if parameter.requires_grad]
        optimizer = torch.optim.SGD(parameters, lr=self.hparams.lr, momentum=self.hparams.momentum,
                                    weight_decay=self.hparams.weight_decay)
        total, warmup = planned_steps(self.trainer), self.hparams.warmup_steps

        def factor(step: int) -> float:
            if step < warmup:
                return WARMUP_START_FACTOR + (1 - WARMUP_START_FACTOR) * step / warmup
            return poly_decay(step, total)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_end(self) -> None:
        export_for_next_stage(self, lambda path: export_detector(self.detector, path), "detector.pt")


def overlay_instances(frame: Tensor, masks: Tensor, label_ids: Tensor) -> Tensor:
    """uint8 frame (3, H, W) with boolean masks (N, H, W) blended in their Cityscapes class colours.

    Each instance gets its own shade of the class colour so that touching instances stay apart; later masks are
    drawn over earlier ones.
    """
    canvas = frame.float().clone()
    for index, (mask, label_id) in enumerate(zip(masks, label_ids.tolist())):
        shade = 0.55 + 0.45 * ((index * 0.618) % 1.0)
        colour = torch.tensor(id2label[label_id].color, dtype=torch.float32, device=frame.device) * shade
        canvas = torch.where(mask[None], (1 - OVERLAY_ALPHA) * canvas + OVERLAY_ALPHA * colour[:, None, None], canvas)
    return canvas.round().to(torch.uint8)
