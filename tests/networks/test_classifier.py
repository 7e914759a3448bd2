from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from networks.classifier import ShapeTextureResNet, load_backbone_weights


def test_features_and_logit_shapes() -> None:
    model = ShapeTextureResNet(num_shapes=7, num_textures=5).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        features = model.features(images)
        shape_logits, texture_logits = model(images)
    assert features.shape == (2, 512)
    assert shape_logits.shape == (2, 7)
    assert texture_logits.shape == (2, 5)


def test_too_small_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="H>=32"):
        ShapeTextureResNet().features(torch.zeros(1, 3, 16, 16))


def test_load_backbone_weights_from_torchvision_state_dict(tmp_path: Path) -> None:
    source = resnet18(weights=None)
    weights_file = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), weights_file)
    model = ShapeTextureResNet()
    heads_before = {name: value.clone() for name, value in model.shape_head.state_dict().items()}

    load_backbone_weights(model, weights_file)

    loaded = model.backbone.state_dict()
    for name, value in source.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(loaded[name], value), name
    for name, value in model.shape_head.state_dict().items():
        assert torch.equal(value, heads_before[name])


def test_load_backbone_weights_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_backbone_weights(ShapeTextureResNet(), missing)


def test_load_backbone_weights_mismatched_keys(tmp_path: Path) -> None:
    weights_file = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "extra.weight": torch.zeros(1)}, weights_file)
    with pytest.raises(ValueError, match="wrong.pth.*missing keys.*extra.weight"):
        load_backbone_weights(ShapeTextureResNet(), weights_file)


def test_load_backbone_weights_mismatched_shapes(tmp_path: Path) -> None:
    state_dict = resnet18(weights=None).state_dict()
    state_dict["conv1.weight"] = torch.zeros(64, 4, 7, 7)
    weights_file = tmp_path / "four_channels.pth"
    torch.save(state_dict, weights_file)
    with pytest.raises(ValueError, match="four_channels.pth"):
        load_backbone_weights(ShapeTextureResNet(), weights_file)
