"""ResNet-18 shape/texture classifier used to evaluate generated garments.

The trunk is torchvision's ``resnet18`` built without weights (nothing is ever downloaded); ImageNet weights can be
loaded from a local file with :func:`load_backbone_weights`. :class:`lightning_modules.ShapeTextureClassifier` trains
it and exports it (:func:`export_classifier`) for :class:`lightning_modules.FashionCAN`'s metrics
(:func:`load_exported_classifier`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import resnet18

from networks.exported_weights import export_weights, read_exported_weights, read_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 512
CLASSIFIER_EXPORT_FORMAT = "genforecast.shape_texture_classifier/1"
"""Format marker of the files :func:`export_classifier` writes."""


class ShapeTextureResNet(nn.Module):
    """ResNet-18 trunk with two linear heads (shape classes, texture classes).

    Inputs are RGB images in [-1, 1] of size >= 32 x 32. They are mapped to [0, 1] and standardised with the ImageNet
    channel mean/std, ``x_in = ((x + 1) / 2 - mean) / std``, so that ImageNet-pretrained weights see the input
    distribution they were trained on. ``features`` returns the globally average-pooled 512-d trunk output.
    """

    def __init__(self, num_shapes: int = 7, num_textures: int = 7) -> None:
        super().__init__()
        self.backbone = resnet18(weights=None)
        self.backbone.fc = nn.Identity()
        self.shape_head = nn.Linear(FEATURE_DIM, num_shapes)
        self.texture_head = nn.Linear(FEATURE_DIM, num_textures)
        self.register_buffer("input_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, images: Tensor) -> Tensor:
        """Pooled trunk features (N, 512) of images (N, 3, H, W) in [-1, 1]."""
        if images.dim() != 4 or images.shape[1] != 3 or min(images.shape[2:]) < 32:
            raise ValueError(f"expected images of shape (N, 3, H>=32, W>=32), got {tuple(images.shape)}")
        standardised = ((images + 1) / 2 - self.input_mean) / self.input_std
        return self.backbone(standardised)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(shape_logits (N, num_shapes), texture_logits (N, num_textures))``."""
        features = self.features(images)
        return self.shape_head(features), self.texture_head(features)


def load_backbone_weights(model: ShapeTextureResNet, path: str | Path) -> None:
    """Load a local torchvision ResNet-18 state dict (e.g. ImageNet weights) into ``model.backbone`` in place.

    The file is read with ``torch.load(..., weights_only=True)``; its ``fc.*`` entries (the ImageNet classifier)
    are ignored and every other trunk parameter/buffer must be present with matching shapes.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a state dict or its keys / shapes do not match ResNet-18.
    """
    state_dict = read_state_dict(path, "ResNet-18 backbone")
    trunk_state = {key: value for key, value in state_dict.items() if not key.startswith("fc.")}
    expected_keys = set(model.backbone.state_dict())
    missing = sorted(expected_keys - set(trunk_state))
    unexpected = sorted(set(trunk_state) - expected_keys)
    if missing or unexpected:
        raise ValueError(
            f"{path} is not a torchvision ResNet-18 state dict: missing keys {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    try:
        model.backbone.load_state_dict(trunk_state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path} does not match the ResNet-18 trunk: {error}") from error


def export_classifier(network: ShapeTextureResNet, path: str | Path) -> Path:
    """Write the classifier weights with their class counts, atomically."""
    return export_weights(path, CLASSIFIER_EXPORT_FORMAT, network, num_shapes=network.shape_head.out_features,
                          num_textures=network.texture_head.out_features)


def load_exported_classifier(path: str | Path, num_shapes: int, num_textures: int) -> ShapeTextureResNet:
    """Load a file written by :func:`export_classifier`, checking its format and class counts; eval mode."""
    payload = read_exported_weights(path, CLASSIFIER_EXPORT_FORMAT, "shape/texture classifier",
                                    "train it first with `genforecast fit --config configs/fashion/classifier.yaml` "
                                    "(or `make train-fashion`), or set model.init_args.classifier_weights to null "
                                    "to skip the classifier metrics")
    if (payload["num_shapes"], payload["num_textures"]) != (num_shapes, num_textures):
        raise ValueError(f"{path} classifies {payload['num_shapes']} shapes and {payload['num_textures']} textures; "
                         f"this model needs {num_shapes} and {num_textures}")
    network = ShapeTextureResNet(num_shapes, num_textures)
    network.load_state_dict(payload["state_dict"])
    return network.eval()
