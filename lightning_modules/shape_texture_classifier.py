"""ShapeTextureClassifier: ResNet-18 shape and texture heads trained on the catalogue.

DesIGN scores generated garments with ResNet-18 shape and texture classifiers (Inception-score style scores,
entropy, nearest-neighbour distances in their feature space). This module trains those heads on the same
catalogue as the GANs, from scratch or from a local ImageNet ResNet-18 file, and exports the weights to a
small self-describing file that :class:`FashionCAN` loads by path (``classifier_weights``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from datamodules.augment import scale_translate_jitter, to_unit_range
from lightning_modules.stage_training import export_for_next_stage, planned_steps
from networks.classifier import ShapeTextureResNet, export_classifier, load_backbone_weights


class ShapeTextureClassifier(L.LightningModule):
    """Two-head ResNet-18 classifier (7 shapes, 7 textures) used by the fashion metrics.

    Args:
        backbone_weights: local torchvision ResNet-18 state-dict file to start from; ``None`` trains from scratch.
        export_path: where ``on_fit_end`` writes the weights file for the GAN metrics; default
            ``<default_root_dir>/classifier.pt``.
    """

    def __init__(self, num_shapes: int = 7, num_textures: int = 7, lr: float = 1e-3, weight_decay: float = 1e-4,
                 backbone_weights: str | None = None, jitter_scale: float = 0.1, jitter_translate: float = 0.1,
                 export_path: str | None = None, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.network = ShapeTextureResNet(num_shapes, num_textures)
        if backbone_weights is not None:
            load_backbone_weights(self.network, backbone_weights)
        self.shape_accuracy = MulticlassAccuracy(num_shapes)
        self.texture_accuracy = MulticlassAccuracy(num_textures)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        rng = torch.Generator(device=self.device).manual_seed(self.hparams.seed * 1_000_003 + self.global_step)
        images, _ = scale_translate_jitter(to_unit_range(batch["image"]), None, self.hparams.jitter_scale,
                                           self.hparams.jitter_translate, rng)
        shape_logits, texture_logits = self.network(images)
        shape_loss = F.cross_entropy(shape_logits, batch["shape"])
        texture_loss = F.cross_entropy(texture_logits, batch["texture"])
        self.log_dict({"train/shape_loss": shape_loss, "train/texture_loss": texture_loss}, prog_bar=True)
        return shape_loss + texture_loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        shape_logits, texture_logits = self.network(to_unit_range(batch["image"]))
        self.shape_accuracy.update(shape_logits, batch["shape"])
        self.texture_accuracy.update(texture_logits, batch["texture"])
        self.log_dict({"val/shape_accuracy": self.shape_accuracy, "val/texture_accuracy": self.texture_accuracy},
                      prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.hparams.lr,
                                                        total_steps=planned_steps(self.trainer))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_end(self) -> None:
        export_for_next_stage(self, lambda path: export_classifier(self.network, path), "classifier.pt")
