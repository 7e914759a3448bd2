"""Per-frame semantic segmenters: torchvision segmentation networks on Cityscapes trainIds, and their weight files.

The S2S forecasters of Luc et al. (ICCV 2017) read and predict the pre-softmax class scores of a frozen segmenter;
:class:`lightning_modules.SemanticSegmenter` trains a :class:`SegmentationNetwork` and exports it
(:func:`export_segmenter`), and the score cache, the distance-map cache and the forecasters load it by path
(:func:`load_exported_segmenter`). Networks are built without any download; ImageNet backbone weights can be read
from a local file (:func:`load_backbone_weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models import segmentation

from metrics.cityscapes_labels import NUM_EVALUATED_CLASSES
from networks.classifier import IMAGENET_MEAN, IMAGENET_STD
from networks.exported_weights import export_weights, read_exported_weights, read_state_dict

SEGMENTER_EXPORT_FORMAT = "genforecast.semantic_segmenter/1"
"""Format marker of the files :func:`export_segmenter` writes."""

Architecture = Literal["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50",
                       "fcn_resnet50"]
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "lraspp_mobilenet_v3_large": segmentation.lraspp_mobilenet_v3_large,
    "deeplabv3_mobilenet_v3_large": segmentation.deeplabv3_mobilenet_v3_large,
    "deeplabv3_resnet50": segmentation.deeplabv3_resnet50,
    "fcn_resnet50": segmentation.fcn_resnet50,
}
"""torchvision builders of the supported segmentation networks, by architecture name."""
BATCHNORM_MOMENTUM = 0.1
"""Running-statistics momentum of every batch norm. torchvision's MobileNetV3 uses 0.01, tuned for long ImageNet runs;
after a few hundred segmentation steps its running statistics would still be mostly their initial values, and the
network in eval mode would predict one class."""


class SegmentationNetwork(nn.Module):
    """A torchvision segmentation network taking images in [-1, 1] and returning per-class logits.

    ``forward(images (B, 3, H, W) in [-1, 1]) -> (B, num_classes, H, W)`` pre-softmax scores at the input
    resolution. Inputs are mapped to [0, 1] and standardised with the ImageNet mean/std inside, so ImageNet backbone
    weights see the distribution they were trained on. Every batch norm uses :data:`BATCHNORM_MOMENTUM`.
    ``architecture`` and ``num_classes`` are kept as attributes for exports and cache metadata.
    """

    def __init__(self, architecture: Architecture = "deeplabv3_resnet50",
                 num_classes: int = NUM_EVALUATED_CLASSES) -> None:
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
    state = read_state_dict(path, "backbone")
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


def export_segmenter(network: SegmentationNetwork, path: str | Path) -> Path:
    """Write the segmenter weights with a format marker, its architecture and class count, atomically."""
    return export_weights(path, SEGMENTER_EXPORT_FORMAT, network, architecture=network.architecture,
                          num_classes=network.num_classes)


def read_segmenter_export(path: str | Path) -> dict[str, Any]:
    """The checked contents of an exported segmenter: ``format``, ``architecture``, ``num_classes``, ``state_dict``."""
    payload = read_exported_weights(path, SEGMENTER_EXPORT_FORMAT, "semantic segmenter",
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

