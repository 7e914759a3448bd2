"""The suite's one Cityscapes label module: tables derived from ``cityscapesscripts.helpers.labels`` (never copied by
hand), used by the data, the networks, the metrics and the pictures alike.

Conventions of the official benchmark:

* **label ids** (``Label.id``, 0..33) are what ground-truth ``*_labelIds.png`` files and submissions use;
  ``*_instanceIds.png`` files store ``label_id * 1000 + k`` for individual instances and the plain label id for
  everything else (stuff classes, void, and "group"/crowd regions of instance classes).
* **trainIds** (``Label.trainId``) number the 19 evaluated classes 0..18; every label with ``ignoreInEval`` maps to
  :data:`IGNORE_TRAIN_ID` (255).
* the 8 **instance classes** (the "moving objects") are the labels with ``hasInstances`` and not ``ignoreInEval``:
  person, rider, car, truck, bus, train, motorcycle, bicycle (caravan and trailer have instances but are ignored).
* **void** labels are those with ``ignoreInEval``; the instance evaluator treats ground-truth pixels holding one of
  these ids as void.
"""

from __future__ import annotations

import numpy as np
import torch
from cityscapesscripts.helpers.labels import Label, labels
from torch import Tensor

IGNORE_TRAIN_ID = 255
"""trainId of every label that is not evaluated."""

EVALUATED_LABELS: tuple[Label, ...] = tuple(
    sorted((label for label in labels if not label.ignoreInEval and label.id >= 0), key=lambda label: label.trainId)
)
"""The 19 evaluated labels, ordered by trainId (so ``EVALUATED_LABELS[train_id]``)."""

NUM_EVALUATED_CLASSES = len(EVALUATED_LABELS)
EVALUATED_CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in EVALUATED_LABELS)

TRAIN_ID_NAMES: dict[int, str] = {index: name for index, name in enumerate(EVALUATED_CLASS_NAMES)} | {
    IGNORE_TRAIN_ID: "ignored"}
"""trainId -> class name, with the ignore id: the legend of a trainId map (W&B mask overlays)."""

INSTANCE_LABELS: tuple[Label, ...] = tuple(label for label in EVALUATED_LABELS if label.hasInstances)
"""The 8 instance classes (moving objects), ordered by label id."""

INSTANCE_LABEL_IDS: tuple[int, ...] = tuple(label.id for label in INSTANCE_LABELS)
INSTANCE_TRAIN_IDS: tuple[int, ...] = tuple(label.trainId for label in INSTANCE_LABELS)
INSTANCE_CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in INSTANCE_LABELS)

VOID_LABEL_IDS: tuple[int, ...] = tuple(label.id for label in labels if label.ignoreInEval)
"""Ids of all labels ignored in evaluation (includes -1, the license plate, which never occurs in id maps)."""

INSTANCE_ID_OFFSET = 1000
"""Instance-id maps encode individual instances as ``label_id * INSTANCE_ID_OFFSET + k``."""


def label_id_to_train_id_table() -> np.ndarray:
    """Lookup table (256,) uint8: ``table[label_id]`` is the trainId, 255 for ignored and unknown ids."""
    table = np.full(256, IGNORE_TRAIN_ID, dtype=np.uint8)
    for label in EVALUATED_LABELS:
        table[label.id] = label.trainId
    return table


def train_id_colors() -> np.ndarray:
    """The Cityscapes palette as uint8 (256, 3) indexed by trainId (255 and unused entries black).

    Indexing it with a trainId map colourises it directly: ``train_id_colors()[labels]`` is (..., 3).
    """
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in EVALUATED_LABELS:
        palette[label.trainId] = label.color
    return palette


def colorize(train_ids: Tensor) -> Tensor:
    """Cityscapes colours of trainId maps (..., H, W) as uint8 RGB (..., 3, H, W); ignored pixels are black."""
    palette = torch.from_numpy(train_id_colors()).to(train_ids.device)
    return palette[train_ids.long().clamp(0, 255)].movedim(-1, -3)


def train_id_to_label_id_table() -> np.ndarray:
    """Lookup table (256,) uint8: ``table[train_id]`` is the label id, 0 ("unlabeled") for 255 and unknown trainIds."""
    table = np.zeros(256, dtype=np.uint8)
    for label in EVALUATED_LABELS:
        table[label.trainId] = label.id
    return table


def label_ids_to_train_ids(label_ids: Tensor) -> Tensor:
    """Map a tensor of label ids (any shape, values 0..255) to trainIds (int64, ignored labels -> 255)."""
    table = torch.from_numpy(label_id_to_train_id_table().astype(np.int64)).to(label_ids.device)
    return table[label_ids.long()]


def train_ids_to_label_ids(train_ids: Tensor) -> Tensor:
    """Map a tensor of trainIds (any shape, values 0..255) to label ids (int64, 255 -> 0), e.g. for submissions."""
    table = torch.from_numpy(train_id_to_label_id_table().astype(np.int64)).to(train_ids.device)
    return table[train_ids.long()]


def instance_ids_to_label_ids(instance_ids: Tensor) -> Tensor:
    """Label ids of an instance-id map: ``id // 1000`` for instances (>= 1000), the value itself otherwise."""
    instance_ids = instance_ids.long()
    return torch.where(instance_ids >= INSTANCE_ID_OFFSET, instance_ids // INSTANCE_ID_OFFSET, instance_ids)
