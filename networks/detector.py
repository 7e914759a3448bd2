"""Mask R-CNN with a feature pyramid: the Cityscapes instance detector of F2F (Luc et al., ECCV 2018), stage 1.

F2F fine-tunes a COCO-initialised Mask R-CNN ResNet-50-FPN on the 8 Cityscapes instance classes, then forecasts its
FPN features P2..P5 (P6 is a stride-2 subsampling of P5) and runs the frozen RPN, box and mask heads on the forecast
features. This module builds torchvision's Mask R-CNN without any download, loads local COCO weights, and splits
inference into the two halves the forecaster needs:

- :func:`fpn_features`: frames -> the pyramid ``p2 .. p6`` (256 channels, strides 4 .. 64) and the image sizes the
  heads need later;
- :func:`detect_from_features`: a (possibly forecast) pyramid -> Cityscapes instance predictions (binary masks at the
  frame size, Cityscapes label ids, scores), the input format of :class:`metrics.instance_ap.CityscapesInstanceAP`;
- :func:`detect`: both, i.e. torchvision's own inference on real frames (the oracle and copy-last baselines).

Image normalisation: torchvision's ``GeneralizedRCNNTransform`` expects float images in [0, 1] and standardises
them with the ImageNet mean and std (the statistics the COCO weights were trained with). The functions here take
the suite's frames, uint8 in [0, 255] or float in [-1, 1], and map them to [0, 1] first. The transform also resizes
images so that their short side is ``min_size`` (long side at most ``max_size``); the suite builds the detector with
``min_size``/``max_size`` equal to its frame size (1024/2048 for Cityscapes, 128/256 for the demo), so frames are
never resampled, and pads the batch to a multiple of 32 pixels.

Detector classes are 0 (background) and 1..8, the Cityscapes instance classes in label-id order
(:data:`CITYSCAPES_INSTANCE_CLASSES`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops.misc import FrozenBatchNorm2d

from metrics.cityscapes_labels import INSTANCE_CLASS_NAMES, INSTANCE_ID_OFFSET, INSTANCE_LABEL_IDS
from networks.exported_weights import export_weights, read_exported_weights, read_state_dict

CITYSCAPES_INSTANCE_CLASSES: tuple[str, ...] = INSTANCE_CLASS_NAMES
"""The 8 evaluated Cityscapes instance classes in label-id order; detector class ``i`` (1..8) is entry ``i - 1``."""
NUM_DETECTOR_CLASSES = len(CITYSCAPES_INSTANCE_CLASSES) + 1
"""Detector outputs: background plus the 8 instance classes."""
FPN_LEVELS: tuple[str, ...] = ("p2", "p3", "p4", "p5", "p6")
"""Names of the pyramid levels returned by :func:`fpn_features`."""
FPN_STRIDES: tuple[int, ...] = (4, 8, 16, 32, 64)
"""Stride of each pyramid level relative to the (padded) input image."""
FPN_CHANNELS = 256
DETECTOR_EXPORT_FORMAT = "genforecast.mask_rcnn_detector/1"
"""Format marker of the files :func:`export_detector` writes."""
_TORCHVISION_LEVELS: tuple[str, ...] = ("0", "1", "2", "3", "pool")
"""torchvision's names of P2..P6 in the backbone output (the heads' RoI poolers read '0'..'3')."""
DEFAULT_ANCHOR_SIZES: tuple[int, ...] = (32, 64, 128, 256, 512)
"""torchvision's anchor size per level P2..P6, for 1024-pixel-high Cityscapes frames (scale down for smaller ones)."""
ANCHOR_ASPECT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)
BOX_HEAD_SIZE = 1024
"""Width of Mask R-CNN's two-layer box head (torchvision's and Detectron's)."""
MASK_HEAD_CHANNELS = 256
"""Channels of Mask R-CNN's four mask-head convolutions."""
MASK_HEAD_LAYERS = 4
BOX_ROI_SIZE = 7
"""Side of the RoIAlign grid the box head reads (the mask head reads 14x14)."""
MASK_THRESHOLD = 0.5
"""Mask probabilities above this are instance pixels (Mask R-CNN's binarisation)."""

Backbone = Literal["resnet50", "resnet18", "mobilenet_v3"]
BackboneNorm = Literal["frozen", "batch"]
_MOBILENET_STAGES = [1, 2, 3, 4]
"""MobileNetV3-Large stages returned to the FPN: the blocks at strides 4, 8, 16 and 32 (P2..P5 as for ResNets)."""


def detector_labels_to_label_ids(labels: Tensor) -> Tensor:
    """Cityscapes label ids (int64) of detector classes 1..8; ``ValueError`` for background or unknown classes."""
    labels = labels.long()
    if labels.numel() and (labels.min() < 1 or labels.max() > len(INSTANCE_LABEL_IDS)):
        raise ValueError(f"detector classes must be in 1..{len(INSTANCE_LABEL_IDS)}, got {labels.unique().tolist()}")
    table = torch.tensor((0, *INSTANCE_LABEL_IDS), dtype=torch.long, device=labels.device)
    return table[labels]


def label_ids_to_detector_labels(label_ids: Tensor) -> Tensor:
    """Detector classes 1..8 (int64) of Cityscapes instance label ids; ``ValueError`` for any other label id."""
    label_ids = label_ids.long()
    known = torch.tensor(INSTANCE_LABEL_IDS, dtype=torch.long, device=label_ids.device)
    matches = label_ids[..., None] == known
    if not matches.any(dim=-1).all():
        unknown = label_ids[~matches.any(dim=-1)].unique().tolist()
        raise ValueError(f"label ids {unknown} are not Cityscapes instance classes {INSTANCE_LABEL_IDS}")
    return matches.long().argmax(dim=-1) + 1


class FPNMaskRCNN(MaskRCNN):
    """torchvision's Mask R-CNN remembering how it was built (``backbone_name``, ``backbone_norm``), for exports."""

    def __init__(self, backbone: nn.Module, backbone_name: str, backbone_norm: str, **kwargs: Any) -> None:
        super().__init__(backbone, **kwargs)
        self.backbone_name = backbone_name
        self.backbone_norm = backbone_norm


def build_mask_rcnn(backbone: Backbone = "resnet50", num_classes: int = NUM_DETECTOR_CLASSES, min_size: int = 1024,
                    max_size: int = 2048, trainable_backbone_layers: int = 3, backbone_norm: BackboneNorm = "frozen",
                    anchor_sizes: Sequence[int] = DEFAULT_ANCHOR_SIZES, box_head_size: int = BOX_HEAD_SIZE,
                    mask_head_channels: int = MASK_HEAD_CHANNELS,
                    box_batch_size_per_image: int = 512) -> FPNMaskRCNN:
    """A randomly initialised Mask R-CNN with an FPN over ``backbone``; nothing is downloaded.

    ``resnet50`` has exactly the parameter names and shapes of torchvision's ``maskrcnn_resnet50_fpn`` (COCO weights
    load with :func:`load_coco_weights`); ``resnet18`` and ``mobilenet_v3`` (MobileNetV3-Large) are small variants
    for CPU runs. Every variant returns P2..P6 with :data:`FPN_CHANNELS` channels, so the forecaster sees one
    interface.

    Args:
        min_size, max_size: the transform scales images to a short side of ``min_size`` and a long side of at most
            ``max_size``; set them to the frame size so that frames are not resampled.
        trainable_backbone_layers: backbone stages that train, counted from the last (ResNets: 0..5,
            MobileNetV3: 0..6); the others are frozen, as when fine-tuning from COCO.
        backbone_norm: ``"frozen"`` (``FrozenBatchNorm2d``: fixed statistics, as in the COCO weights; use it when
            starting from them) or ``"batch"`` (trainable ``BatchNorm2d``, as torchvision does without pretrained
            weights; use it when training from scratch, where frozen statistics would be an identity).
        anchor_sizes: anchor size (pixels) per level P2..P6; scale :data:`DEFAULT_ANCHOR_SIZES` with the frame size.
        box_head_size, mask_head_channels: widths of the box and mask heads (torchvision's 1024 and 256; narrower
            heads make CPU training affordable, the mask head dominating its cost).
        box_batch_size_per_image: proposals sampled per image to train the box and mask heads (a quarter of them
            positive at most); only training uses it.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be at least 2, got {num_classes}")
    if min_size <= 0 or max_size < min_size:
        raise ValueError(f"need 0 < min_size <= max_size, got {min_size} and {max_size}")
    if min(box_head_size, mask_head_channels, box_batch_size_per_image) <= 0:
        raise ValueError(f"head sizes and box_batch_size_per_image must be positive, got {box_head_size}, "
                         f"{mask_head_channels} and {box_batch_size_per_image}")
    if len(anchor_sizes) != len(FPN_LEVELS) or min(anchor_sizes) <= 0:
        raise ValueError(f"anchor_sizes needs one positive size per level {FPN_LEVELS}, got {list(anchor_sizes)}")
    norms = {"frozen": FrozenBatchNorm2d, "batch": nn.BatchNorm2d}
    if backbone_norm not in norms:
        raise ValueError(f"backbone_norm must be one of {sorted(norms)}, got {backbone_norm!r}")
    if backbone in ("resnet50", "resnet18"):
        body = resnet_fpn_backbone(backbone_name=backbone, weights=None, norm_layer=norms[backbone_norm],
                                   trainable_layers=trainable_backbone_layers)
    elif backbone == "mobilenet_v3":
        body = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True,
                                  norm_layer=norms[backbone_norm], trainable_layers=trainable_backbone_layers,
                                  returned_layers=_MOBILENET_STAGES)
    else:
        raise ValueError(f"unknown detector backbone {backbone!r}; choose resnet50, resnet18 or mobilenet_v3")
    anchors = AnchorGenerator(tuple((int(size),) for size in anchor_sizes),
                              (ANCHOR_ASPECT_RATIOS,) * len(FPN_LEVELS))
    box_features = body.out_channels * BOX_ROI_SIZE**2
    return FPNMaskRCNN(
        body, backbone_name=backbone, backbone_norm=backbone_norm, min_size=min_size, max_size=max_size,
        rpn_anchor_generator=anchors, box_batch_size_per_image=box_batch_size_per_image,
        box_head=TwoMLPHead(box_features, box_head_size), box_predictor=FastRCNNPredictor(box_head_size, num_classes),
        mask_head=MaskRCNNHeads(body.out_channels, (mask_head_channels,) * MASK_HEAD_LAYERS, 1),
        mask_predictor=MaskRCNNPredictor(mask_head_channels, mask_head_channels, num_classes))


_CLASS_SPECIFIC_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")
"""Parameters whose shapes depend on the number of classes (COCO's 91 vs Cityscapes' 9)."""


def _listed(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def load_coco_weights(model: MaskRCNN, path: str | Path) -> list[str]:
    """Load a local torchvision Mask R-CNN state dict (e.g. the COCO ``maskrcnn_resnet50_fpn`` file) into ``model``.

    Class-specific predictor layers (box classifier and regressor, mask logits) whose shapes differ from ``model``'s
    keep their fresh initialisation; every other tensor must be present with its shape, otherwise ``ValueError``
    names the file and the mismatching keys. Returns the names of the skipped predictor tensors.
    """
    state = read_state_dict(path, "COCO detector")
    expected = model.state_dict()
    skipped, wrong_shapes = [], []
    for name, tensor in expected.items():
        if name in state and state[name].shape != tensor.shape:
            (skipped if name.startswith(_CLASS_SPECIFIC_PREFIXES) else wrong_shapes).append(
                f"{name} {tuple(state[name].shape)} vs {tuple(tensor.shape)}")
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if missing or unexpected or wrong_shapes:
        problems = [f"{label}: {_listed(names)}" for label, names in
                    (("missing", missing), ("unexpected", unexpected), ("shape (file vs model)", wrong_shapes)) if names]
        hint = (" (COCO weights need backbone_norm='frozen')" if any(name.endswith("num_batches_tracked")
                                                                    for name in missing) else "")
        raise ValueError(f"{path} does not match the {describe_detector(model)['architecture']} detector{hint}: "
                         + "; ".join(problems))
    skipped_names = [entry.split(" ")[0] for entry in skipped]
    model.load_state_dict({name: tensor for name, tensor in state.items() if name not in skipped_names}, strict=False)
    return skipped_names


def describe_detector(model: MaskRCNN) -> dict[str, Any]:
    """What a forecaster needs to know about a detector: architecture, classes, pyramid, anchors, heads, input size.

    The backbone reads ``unknown`` for a torchvision ``MaskRCNN`` not built by :func:`build_mask_rcnn`.
    """
    backbone_name = getattr(model, "backbone_name", "unknown")
    return {"architecture": f"mask_rcnn_{backbone_name}_fpn", "backbone": backbone_name,
            "backbone_norm": getattr(model, "backbone_norm", "unknown"),
            "num_classes": model.roi_heads.box_predictor.cls_score.out_features,
            "fpn_channels": model.backbone.out_channels, "fpn_levels": list(FPN_LEVELS),
            "anchor_sizes": [int(sizes[0]) for sizes in model.rpn.anchor_generator.sizes],
            "box_head_size": model.roi_heads.box_head.fc7.out_features,
            "mask_head_channels": model.roi_heads.mask_predictor.conv5_mask.out_channels,
            "min_size": int(model.transform.min_size[-1]), "max_size": int(model.transform.max_size)}


def build_from_description(description: Mapping[str, Any]) -> FPNMaskRCNN:
    """A randomly initialised detector of the architecture that :func:`describe_detector` reported."""
    return build_mask_rcnn(backbone=description["backbone"], num_classes=description["num_classes"],
                           min_size=description["min_size"], max_size=description["max_size"],
                           backbone_norm=description["backbone_norm"], anchor_sizes=description["anchor_sizes"],
                           box_head_size=description["box_head_size"],
                           mask_head_channels=description["mask_head_channels"])


def check_detector_compatible(detector: MaskRCNN | Mapping[str, Any], expected: Mapping[str, Any],
                              source: str | Path | None = None) -> dict[str, Any]:
    """Check a detector (or its :func:`describe_detector` dict, e.g. from an export) against ``expected``.

    Every key of ``expected`` (e.g. ``{"num_classes": 9, "architecture": "mask_rcnn_resnet50_fpn",
    "fpn_channels": 256}``) must have that value; otherwise ``ValueError`` names ``source`` and each mismatch, so a
    forecaster fails before training rather than on its first batch. Returns the description.
    """
    description = describe_detector(detector) if isinstance(detector, nn.Module) else dict(detector)
    problems = []
    for key, value in expected.items():
        if key not in description:
            problems.append(f"{key} is not recorded (expected {value!r})")
        elif _comparable(description[key]) != _comparable(value):
            problems.append(f"{key} is {description[key]!r}, expected {value!r}")
    if problems:
        raise ValueError(f"detector {source or description.get('architecture')} is incompatible: "
                         + "; ".join(problems))
    return description


def _comparable(value: Any) -> Any:
    return [_comparable(item) for item in value] if isinstance(value, (list, tuple)) else value


def export_detector(model: MaskRCNN, path: str | Path) -> Path:
    """Write the detector weights with a format marker and :func:`describe_detector` info, atomically."""
    return export_weights(path, DETECTOR_EXPORT_FORMAT, model, detector=describe_detector(model))


def read_detector_export(path: str | Path) -> dict[str, Any]:
    """The checked contents of an exported detector file: ``format``, ``detector`` (its description), ``state_dict``."""
    return read_exported_weights(path, DETECTOR_EXPORT_FORMAT, "Mask R-CNN detector",
                                 "train it first with `genforecast fit --config configs/f2f/detector.yaml` "
                                 "(which exports it to its export_path)")


def load_exported_detector(path: str | Path, expected: dict[str, Any] | None = None) -> MaskRCNN:
    """Load a file written by :func:`export_detector`: a frozen detector in eval mode.

    ``expected`` (e.g. ``{"num_classes": 9, "architecture": "mask_rcnn_resnet50_fpn"}``) is checked against the
    file's description with :func:`check_detector_compatible`; a mismatch, or weights that do
    not fit the described architecture, raises ``ValueError`` naming the file.
    """
    payload = read_detector_export(path)
    description = check_detector_compatible(payload["detector"], expected or {}, source=path)
    try:
        model = build_from_description(description)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, ValueError) as error:
        raise ValueError(f"{path} does not hold a loadable {description.get('architecture')} detector: "
                         f"{error}") from error
    return model.eval().requires_grad_(False)


@dataclass(frozen=True)
class DetectorFeatures:
    """The FPN pyramid of a batch of frames and the sizes the detection heads need to use it.

    ``features``: ``p2 .. p6`` (B, 256, H'/stride, W'/stride) where (H', W') is the batch padded to a multiple of
    32; ``image_sizes``: each frame's size after the detector's transform (its valid region in the padded batch);
    ``original_sizes``: each frame's input size, at which :func:`detect_from_features` returns masks.
    """

    features: OrderedDict[str, Tensor]
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]


def _unit_interval(frames: Tensor) -> Tensor:
    """uint8 [0, 255] or float [-1, 1] frames as float [0, 1], the input range of torchvision detectors."""
    if frames.dtype == torch.uint8:
        return frames.float() / 255
    if not frames.is_floating_point():
        raise TypeError(f"frames must be uint8 in [0, 255] or float in [-1, 1], got {frames.dtype}")
    return (frames + 1) / 2


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode without gradients, restoring each submodule's mode afterwards."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes.items():
            module.training = training


def fpn_features(model: MaskRCNN, frames: Tensor) -> DetectorFeatures:
    """The FPN pyramid ``p2 .. p6`` of frames (B, 3, H, W), uint8 or float in [-1, 1], in eval mode, no gradients.

    The frames go through the detector's own transform (ImageNet standardisation, resizing to ``min_size`` which
    is a no-op when it matches the frames, padding) and backbone, exactly as in ``model(images)``.
    """
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape (B, 3, H, W), got {tuple(frames.shape)}")
    with _evaluating(model):
        original_sizes = [(int(frames.shape[-2]), int(frames.shape[-1]))] * len(frames)
        images, _ = model.transform(list(_unit_interval(frames)))
        outputs = model.backbone(images.tensors)
    features = OrderedDict((level, outputs[name]) for level, name in zip(FPN_LEVELS, _TORCHVISION_LEVELS))
    return DetectorFeatures(features, [tuple(size) for size in images.image_sizes], original_sizes)


def detect_from_features(model: MaskRCNN, features: Mapping[str, Tensor], image_sizes: Sequence[tuple[int, int]],
                         original_sizes: Sequence[tuple[int, int]],
                         score_threshold: float = 0.05) -> list[dict[str, Tensor]]:
    """Instance predictions from a pyramid ``p2 .. p6`` (real or forecast) with the detector's RPN and heads.

    ``image_sizes`` and ``original_sizes`` are those of :class:`DetectorFeatures`. The padded batch size the RPN's
    anchors are laid out on is ``stride(p2) * p2 size``, exact because batches are padded to a multiple of 32.
    Returns per image ``{"masks": bool (N, H, W) at the original size, "labels": int64 Cityscapes label ids,
    "scores": (N,), "boxes": (N, 4) xyxy at the original size}`` for detections scoring above ``score_threshold``
    (at least the box head's own ``score_thresh``, below which it drops detections), best first.
    """
    if set(features) != set(FPN_LEVELS):
        raise ValueError(f"features must hold the levels {FPN_LEVELS}, got {sorted(features)}")
    if score_threshold < model.roi_heads.score_thresh:
        raise ValueError(f"score_threshold {score_threshold} is below the box head's score_thresh "
                         f"{model.roi_heads.score_thresh}, which already dropped those detections")
    levels = OrderedDict((name, features[level]) for level, name in zip(FPN_LEVELS, _TORCHVISION_LEVELS))
    finest = levels[_TORCHVISION_LEVELS[0]]
    if finest.dim() != 4 or not len(image_sizes) == len(original_sizes) == len(finest):
        raise ValueError(f"got {len(image_sizes)} image sizes and {len(original_sizes)} original sizes for "
                         f"features of shape {tuple(finest.shape)}")
    padded_shape = (len(finest), 3, finest.shape[-2] * FPN_STRIDES[0], finest.shape[-1] * FPN_STRIDES[0])
    images = ImageList(finest.new_zeros(()).expand(padded_shape), [tuple(size) for size in image_sizes])
    with _evaluating(model):
        proposals, _ = model.rpn(images, levels)
        detections, _ = model.roi_heads(levels, proposals, images.image_sizes)
        detections = model.transform.postprocess(detections, images.image_sizes, [tuple(s) for s in original_sizes])
    predictions = []
    for detection in detections:
        keep = detection["scores"] > score_threshold
        predictions.append({"masks": detection["masks"][keep, 0] > MASK_THRESHOLD,
                            "labels": detector_labels_to_label_ids(detection["labels"][keep]),
                            "scores": detection["scores"][keep], "boxes": detection["boxes"][keep]})
    return predictions


def detect(model: MaskRCNN, frames: Tensor, score_threshold: float = 0.05) -> list[dict[str, Tensor]]:
    """Instance predictions for frames (B, 3, H, W), uint8 or float in [-1, 1]: :func:`fpn_features` then
    :func:`detect_from_features` (the same computation as torchvision's ``model.eval()(images)``)."""
    pyramid = fpn_features(model, frames)
    return detect_from_features(model, pyramid.features, pyramid.image_sizes, pyramid.original_sizes,
                                score_threshold)


def instances_to_targets(instances: Tensor, min_pixels: int = 10) -> dict[str, Tensor]:
    """torchvision training targets of an instance-id map (H, W) (``label_id * 1000 + k``, anything else ignored).

    One target per instance of the 8 evaluated classes with at least ``min_pixels`` pixels: ``boxes`` float (K, 4)
    ``x0, y0, x1, y1`` enclosing the mask's pixels (``x1 = last column + 1``, so boxes are never empty),
    ``labels`` int64 detector classes 1..8 and ``masks`` uint8 (K, H, W). An image without instances gives empty
    targets, which torchvision trains on as background.
    """
    ids = instances.unique()
    ids = ids[ids >= INSTANCE_ID_OFFSET]
    known = torch.tensor(INSTANCE_LABEL_IDS, device=ids.device)
    ids = ids[torch.isin(ids.long() // INSTANCE_ID_OFFSET, known)]
    masks = instances[None] == ids[:, None, None]
    large = masks.flatten(1).sum(dim=1) >= min_pixels
    masks, ids = masks[large], ids[large]
    height, width = instances.shape
    rows, columns = masks.any(dim=2), masks.any(dim=1)
    top = rows.float().argmax(dim=1)
    bottom = height - rows.flip(1).float().argmax(dim=1)
    left = columns.float().argmax(dim=1)
    right = width - columns.flip(1).float().argmax(dim=1)
    return {"boxes": torch.stack([left, top, right, bottom], dim=1).float(),
            "labels": label_ids_to_detector_labels(ids.long() // INSTANCE_ID_OFFSET),
            "masks": masks.to(torch.uint8)}
