"""The F2F Mask R-CNN: builds offline, COCO weights, label mapping, and features + heads == torchvision's forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models._api
from torchvision.models.detection import maskrcnn_resnet50_fpn

from metrics.cityscapes_labels import INSTANCE_LABEL_IDS
from networks.detector import (
    CITYSCAPES_INSTANCE_CLASSES,
    FPN_CHANNELS,
    FPN_LEVELS,
    build_from_description,
    build_mask_rcnn,
    check_detector_compatible,
    describe_detector,
    detect,
    detect_from_features,
    detector_labels_to_label_ids,
    fpn_features,
    instances_to_targets,
    label_ids_to_detector_labels,
    load_coco_weights,
)

TINY = {"min_size": 64, "max_size": 128, "box_head_size": 64, "mask_head_channels": 16}


def _no_download(*args, **kwargs):
    raise AssertionError("the detector tried to download weights")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _no_download)


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return build_mask_rcnn("resnet18", **TINY).eval()


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.randint(0, 256, (2, 3, 64, 128), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3"])
def test_small_backbones_build_offline_with_the_pyramid_interface(backbone: str, offline: None):
    model = build_mask_rcnn(backbone, **TINY)
    description = describe_detector(model)
    assert description["architecture"] == f"mask_rcnn_{backbone}_fpn"
    assert description["num_classes"] == len(CITYSCAPES_INSTANCE_CLASSES) + 1 == 9
    assert description["fpn_channels"] == FPN_CHANNELS
    features = fpn_features(model, torch.zeros(1, 3, 64, 128, dtype=torch.uint8)).features
    assert [tuple(level.shape) for level in features.values()] == [
        (1, 256, 64 // stride, 128 // stride) for stride in (4, 8, 16, 32, 64)]


def test_resnet50_builds_offline_with_torchvisions_coco_parameter_names(offline: None):
    ours = {name: tensor.shape for name, tensor in build_mask_rcnn("resnet50", num_classes=91).state_dict().items()}
    reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    # torchvision uses trainable BatchNorm2d without pretrained weights; the COCO file has frozen batch norm.
    assert ours == {name: tensor.shape for name, tensor in reference.items()
                    if not name.endswith("num_batches_tracked")}


def test_label_mapping_round_trips_and_rejects_other_classes():
    detector_labels = torch.arange(1, 9)
    label_ids = detector_labels_to_label_ids(detector_labels)
    assert label_ids.tolist() == list(INSTANCE_LABEL_IDS) == [24, 25, 26, 27, 28, 31, 32, 33]
    assert torch.equal(label_ids_to_detector_labels(label_ids), detector_labels)
    assert CITYSCAPES_INSTANCE_CLASSES[2] == "car"
    with pytest.raises(ValueError, match="1..8"):
        detector_labels_to_label_ids(torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[29\]"):
        label_ids_to_detector_labels(torch.tensor([26, 29]))


def test_fpn_features_are_p2_to_p6_with_sizes(detector, frames: torch.Tensor):
    pyramid = fpn_features(detector, frames)
    assert list(pyramid.features) == list(FPN_LEVELS)
    assert pyramid.image_sizes == pyramid.original_sizes == [(64, 128), (64, 128)]
    assert torch.equal(pyramid.features["p6"], pyramid.features["p5"][..., ::2, ::2])
    assert not pyramid.features["p2"].requires_grad
    # uint8 frames and the same frames in [-1, 1] are the same input
    unit = fpn_features(detector, frames.float() / 127.5 - 1).features["p3"]
    torch.testing.assert_close(unit, pyramid.features["p3"], atol=1e-4, rtol=1e-4)


def test_detect_equals_torchvisions_forward_and_keeps_the_training_mode(detector, frames: torch.Tensor):
    detector.train()
    ours = detect(detector, frames)
    assert detector.training and detector.roi_heads.training
    detector.eval()
    with torch.no_grad():
        reference = detector(list(frames.float() / 255))
    for prediction, expected in zip(ours, reference):
        assert len(prediction["scores"]) > 0
        assert prediction["masks"].dtype == torch.bool and prediction["masks"].shape[1:] == (64, 128)
        assert torch.equal(prediction["scores"], expected["scores"])
        assert torch.equal(prediction["boxes"], expected["boxes"])
        assert torch.equal(prediction["masks"], expected["masks"][:, 0] > 0.5)
        assert torch.equal(prediction["labels"], detector_labels_to_label_ids(expected["labels"]))


def test_detect_from_features_thresholds_and_checks_its_input(detector, frames: torch.Tensor):
    pyramid = fpn_features(detector, frames)
    confident = detect_from_features(detector, pyramid.features, pyramid.image_sizes, pyramid.original_sizes,
                                     score_threshold=0.112)
    assert all((prediction["scores"] > 0.112).all() for prediction in confident)
    with pytest.raises(ValueError, match="p6"):
        detect_from_features(detector, {level: pyramid.features[level] for level in FPN_LEVELS[:4]},
                             pyramid.image_sizes, pyramid.original_sizes)
    with pytest.raises(ValueError, match="score_thresh"):
        detect_from_features(detector, pyramid.features, pyramid.image_sizes, pyramid.original_sizes, 0.01)


def test_coco_weights_load_without_the_class_specific_predictors(tmp_path: Path):
    coco = build_mask_rcnn("resnet18", num_classes=91, **TINY).state_dict()
    path = tmp_path / "coco.pth"
    torch.save(coco, path)
    model = build_mask_rcnn("resnet18", **TINY)
    skipped = load_coco_weights(model, path)
    assert sorted(skipped) == sorted(f"roi_heads.{name}" for name in (
        "box_predictor.cls_score.weight", "box_predictor.cls_score.bias", "box_predictor.bbox_pred.weight",
        "box_predictor.bbox_pred.bias", "mask_predictor.mask_fcn_logits.weight",
        "mask_predictor.mask_fcn_logits.bias"))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in coco.items() if name not in skipped)


def test_coco_weights_of_another_architecture_are_refused_by_name(tmp_path: Path):
    path = tmp_path / "other.pth"
    torch.save(build_mask_rcnn("mobilenet_v3", **TINY).state_dict(), path)
    with pytest.raises(ValueError, match=r"other\.pth does not match the mask_rcnn_resnet18_fpn detector.*missing"):
        load_coco_weights(build_mask_rcnn("resnet18", **TINY), path)
    torch.save(build_mask_rcnn("resnet18", **TINY).state_dict(), path)
    with pytest.raises(ValueError, match="backbone_norm='frozen'.*num_batches_tracked"):
        load_coco_weights(build_mask_rcnn("resnet18", backbone_norm="batch", **TINY), path)


def test_instances_become_targets_with_enclosing_boxes():
    instances = torch.zeros(8, 10, dtype=torch.int32)
    instances[1:4, 2:7] = 26001  # car, 15 pixels
    instances[5:8, 0:1] = 24002  # person, 3 pixels: too small
    instances[6:8, 6:10] = 29001  # caravan: not an evaluated class
    instances[0, :] = 26  # car group region (plain label id)
    targets = instances_to_targets(instances, min_pixels=10)
    assert targets["boxes"].tolist() == [[2.0, 1.0, 7.0, 4.0]]
    assert targets["labels"].tolist() == [3]
    assert targets["masks"].dtype == torch.uint8 and targets["masks"].sum() == 15
    empty = instances_to_targets(torch.zeros(8, 10, dtype=torch.int32))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 8, 10)


def test_compatibility_check_names_every_mismatch(detector):
    description = check_detector_compatible(detector, {"num_classes": 9, "fpn_channels": 256})
    assert build_from_description(description).roi_heads.mask_predictor.conv5_mask.out_channels == 16
    with pytest.raises(ValueError, match=r"ckpt\.pt is incompatible: num_classes is 9, expected 91; "
                                         r"architecture is 'mask_rcnn_resnet18_fpn', expected"):
        check_detector_compatible(description, {"num_classes": 91, "architecture": "mask_rcnn_resnet50_fpn"},
                                  source="ckpt.pt")
