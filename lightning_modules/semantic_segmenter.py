"""SemanticSegmenter: the per-frame Cityscapes segmenter whose class scores the S2S forecasters read and predict.

Luc et al. (ICCV 2017) forecast the pre-softmax class scores of a semantic segmentation network (Dilation10 in the
paper) for future frames: the segmenter's scores of the past frames are the inputs, its scores of the future frames
are the targets, and its segmentation of the annotated frame is a second reference besides the ground truth. This
module trains a torchvision segmentation network (built without any download; ImageNet backbone weights can be read
from a local file) on the annotated Cityscapes frames, or on every frame of the demo set, which labels them all, and
exports its weights to a small self-describing file that the score extraction and the forecasters load by path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import segmentation

from datamodules.augment import to_unit_range
from datamodules.cityscapes import IGNORE_INDEX, NUM_CLASSES, train_id_colors
from datamodules.prediction import sample_names, target_names
from genforecast.exported_weights import export_weights, read_exported_weights
from genforecast.visuals import image_grid, log_image, log_segmentation_masks
from metrics.cityscapes_labels import TRAIN_ID_NAMES
from metrics.segmentation import SegmentationIoU
from networks.classifier import IMAGENET_MEAN, IMAGENET_STD

EXPORT_FORMAT = "genforecast.semantic_segmenter/1"
Architecture = Literal["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50",
                       "fcn_resnet50"]
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "lraspp_mobilenet_v3_large": segmentation.lraspp_mobilenet_v3_large,
    "deeplabv3_mobilenet_v3_large": segmentation.deeplabv3_mobilenet_v3_large,
    "deeplabv3_resnet50": segmentation.deeplabv3_resnet50,
    "fcn_resnet50": segmentation.fcn_resnet50,
}
"""torchvision builders of the supported segmentation networks, by architecture name."""
POLY_POWER = 0.9
"""Exponent of the poly learning-rate decay used for Cityscapes segmenters (DeepLab)."""
BATCHNORM_MOMENTUM = 0.1
"""Running-statistics momentum of every batch norm. torchvision's MobileNetV3 uses 0.01, tuned for long ImageNet runs;
after a few hundred segmentation steps its running statistics would still be mostly their initial values, and the
network in eval mode would predict one class."""
GRID_IMAGES = 4
"""Validation images shown in the logged input / prediction / ground-truth grid."""


class SegmentationNetwork(nn.Module):
    """A torchvision segmentation network taking images in [-1, 1] and returning per-class logits.

    ``forward(images (B, 3, H, W) in [-1, 1]) -> (B, num_classes, H, W)`` pre-softmax scores at the input
    resolution. Inputs are mapped to [0, 1] and standardised with the ImageNet mean/std inside, so ImageNet backbone
    weights see the distribution they were trained on. Every batch norm uses :data:`BATCHNORM_MOMENTUM`.
    ``architecture`` and ``num_classes`` are kept as attributes for exports and cache metadata.
    """

    def __init__(self, architecture: Architecture = "deeplabv3_resnet50", num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown segmenter architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.architecture = architecture
        self.num_classes = num_classes
        self.model = ARCHITECTURES[architecture](weights=None, weights_backbone=None, num_classes=num_classes)
        for module in self.model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = BATCHNORM_MOMENTUM
        self.register_buffer("input_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (B, num_classes, H, W) of images (B, 3, H, W) in [-1, 1]."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        standardised = ((images + 1) / 2 - self.input_mean) / self.input_std
        return self.model(standardised)["out"]


def load_backbone_weights(network: SegmentationNetwork, path: str | Path) -> None:
    """Load a local torchvision ImageNet classifier state dict (ResNet-50 or MobileNetV3-Large) into the backbone.

    Segmentation backbones keep the classifier's trunk under the same names, without the ``features.`` prefix for
    MobileNetV3; the file's classifier head (``fc.*``, ``classifier.*``) is ignored. Every backbone tensor must be
    present with its shape, otherwise ``ValueError`` names the file and the first problems.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state dict")
    backbone = network.model.backbone
    loaded, problems = {}, []
    for name, tensor in backbone.state_dict().items():
        source = next((key for key in (name, f"features.{name}") if key in state), None)
        if source is None:
            problems.append(f"missing {name}")
        elif state[source].shape != tensor.shape:
            problems.append(f"{source} has shape {tuple(state[source].shape)}, expected {tuple(tensor.shape)}")
        else:
            loaded[name] = state[source]
    if problems:
        raise ValueError(f"{path} does not match the {network.architecture} backbone: {'; '.join(problems[:5])}"
                         + (f" and {len(problems) - 5} more" if len(problems) > 5 else ""))
    backbone.load_state_dict(loaded)


def colorize(train_ids: Tensor) -> Tensor:
    """Cityscapes colours of trainId maps (..., H, W) as uint8 RGB (..., 3, H, W); ignored pixels are black."""
    palette = torch.from_numpy(train_id_colors()).to(train_ids.device)
    return palette[train_ids.long().clamp(0, 255)].movedim(-1, -3)


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

    def __init__(self, architecture: Architecture = "deeplabv3_resnet50", num_classes: int = NUM_CLASSES,
                 lr: float = 1e-3, weight_decay: float = 1e-4, weights: str | None = None,
                 backbone_weights: str | None = None, export_path: str | None = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
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
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            total = self.trainer.max_steps
        else:
            total = self.trainer.estimated_stepping_batches
        total = max(1, int(total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: (1 - min(step, total) / total) ** POLY_POWER)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            path = self.hparams.export_path or str(Path(self.trainer.default_root_dir) / "segmenter.pt")
            export_segmenter(self.network, path)
        # Under DDP the next stage may start on another rank as soon as this fit returns: wait for the file.
        self.trainer.strategy.barrier("export")


def export_segmenter(network: SegmentationNetwork, path: str | Path) -> Path:
    """Write the segmenter weights with a format marker, its architecture and class count, atomically."""
    return export_weights(path, EXPORT_FORMAT, network, architecture=network.architecture,
                          num_classes=network.num_classes)


def read_segmenter_export(path: str | Path) -> dict[str, Any]:
    """The checked contents of an exported segmenter: ``format``, ``architecture``, ``num_classes``, ``state_dict``."""
    payload = read_exported_weights(path, EXPORT_FORMAT, "semantic segmenter",
                                    "train it first with `genforecast fit --config configs/segforecast/segmenter.yaml` "
                                    "(which exports it to its export_path)")
    if payload.get("architecture") not in ARCHITECTURES:
        raise ValueError(f"{path} holds an unknown segmenter architecture {payload.get('architecture')!r}; "
                         f"supported: {sorted(ARCHITECTURES)}")
    return payload


def load_exported_segmenter(path: str | Path, architecture: str | None = None) -> SegmentationNetwork:
    """Load a file written by :func:`export_segmenter` in eval mode, checking its format (and ``architecture``)."""
    payload = read_segmenter_export(path)
    if architecture is not None and payload["architecture"] != architecture:
        raise ValueError(f"{path} holds a {payload['architecture']} segmenter, not the expected {architecture}")
    network = SegmentationNetwork(payload["architecture"], payload["num_classes"])
    network.load_state_dict(payload["state_dict"])
    return network.eval()

