"""Shared fixtures: tiny procedural datasets written once per session, and no network for W&B."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("WANDB_SILENT", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"


@pytest.fixture(scope="session")
def fashion_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 98-image procedural catalogue (7 shapes x 7 textures x 2) at 48 px, with masks."""
    from genforecast.demo_data.fashion import write_fashion_catalogue

    root = tmp_path_factory.mktemp("data") / "fashion_catalogue"
    write_fashion_catalogue(root, images_per_combination=2, size=48, seed=0)
    return root


@pytest.fixture(scope="session")
def classifier_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported, untrained shape/texture classifier (the metrics only need a feature extractor)."""
    import torch

    from networks.classifier import ShapeTextureResNet, export_classifier

    torch.manual_seed(0)
    return export_classifier(ShapeTextureResNet(7, 7), tmp_path_factory.mktemp("weights") / "classifier.pt")


@pytest.fixture(scope="session")
def ucf101_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny procedural UCF101-format set (2 classes x 2 groups x 1 clip x 12 frames at 64x80)."""
    from genforecast.demo_data.ucf101 import write_ucf101

    root = tmp_path_factory.mktemp("data") / "UCF101"
    write_ucf101(root, classes=2, groups=2, clips_per_group=1, frames=12, size=(64, 80), seed=0)
    return root


@pytest.fixture(scope="session")
def cityscapes_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny procedural Cityscapes-format set: 1 city, 3 train + 2 val snippets at 64x128, every frame labelled.

    Snippets stop at the annotated frame (20 frames): every cached frame precedes it, and writing is a third faster.
    """
    from genforecast.demo_data.cityscapes import write_cityscapes_sequences

    root = tmp_path_factory.mktemp("data") / "cityscapes"
    return write_cityscapes_sequences(root, sequences_per_split={"train": 3, "val": 2}, size=(64, 128),
                                      frames_per_snippet=20, seed=0)


@pytest.fixture(scope="session")
def detector_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported, untrained small Mask R-CNN (resnet18 FPN) for 64x128 frames."""
    import torch

    from networks.detector import build_mask_rcnn, export_detector

    torch.manual_seed(0)
    model = build_mask_rcnn("resnet18", min_size=64, max_size=128, box_head_size=64, mask_head_channels=16)
    return export_detector(model, tmp_path_factory.mktemp("weights") / "detector.pt")


@pytest.fixture(scope="session")
def segmenter_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported, untrained light semantic segmenter (LR-ASPP MobileNetV3)."""
    import torch

    from networks.segmenter import SegmentationNetwork, export_segmenter

    torch.manual_seed(0)
    network = SegmentationNetwork("lraspp_mobilenet_v3_large", 19)
    return export_segmenter(network, tmp_path_factory.mktemp("weights") / "segmenter.pt")
