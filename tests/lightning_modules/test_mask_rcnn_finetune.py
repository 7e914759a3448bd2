"""MaskRCNNFinetune: targets from Cityscapes batches, a short fit with AP validation, export and load."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from datamodules.cityscapes import CityscapesSequenceDataModule
from lightning_modules.mask_rcnn_finetune import MaskRCNNFinetune, overlay_instances
from networks.detector import (
    build_mask_rcnn,
    detect,
    export_detector,
    label_ids_to_detector_labels,
    load_exported_detector,
)

TINY = {"backbone": "resnet18", "min_size": 64, "max_size": 128, "box_head_size": 64, "mask_head_channels": 16,
        "box_batch_size_per_image": 32, "anchor_sizes": [4, 8, 16, 32, 64]}


def _datamodule(root: Path, **kwargs) -> CityscapesSequenceDataModule:
    datamodule = CityscapesSequenceDataModule(str(root), horizon="mid", resolution=(64, 128), crop_size=None,
                                              batch_size=2, val_batch_size=2, **kwargs)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_training_targets_come_from_the_labelled_frames(cityscapes_demo: Path):
    batch = next(iter(_datamodule(cityscapes_demo, load_all_frame_labels=True).train_dataloader()))
    model = MaskRCNNFinetune(**TINY, frames_per_window=3)
    images, targets = model.training_images_and_targets(batch)
    assert len(images) == len(targets) == 2 * 3
    assert images[0].shape == (3, 64, 128) and 0 <= images[0].min() and images[0].max() <= 1
    assert sum(len(target["labels"]) for target in targets) > 0
    for image, target in zip(images, targets):
        assert ((target["boxes"][:, 2:] > target["boxes"][:, :2]).all())
        assert target["masks"].shape[1:] == image.shape[1:] and (target["masks"].flatten(1).sum(1) >= 10).all()
    batch.pop("frame_instances")
    images, targets = model.training_images_and_targets(batch)
    flipped = [torch.equal(image, batch["frames"][index, -1].flip(-1).float() / 255)
               for index, image in enumerate(images)]
    unflipped = [torch.equal(image, batch["frames"][index, -1].float() / 255) for index, image in enumerate(images)]
    assert len(images) == 2 and all(a or b for a, b in zip(flipped, unflipped))


def test_short_fit_validates_and_exports_a_loadable_detector(cityscapes_demo: Path, tmp_path: Path):
    torch.manual_seed(0)
    export_path = tmp_path / "exported" / "detector.pt"
    model = MaskRCNNFinetune(**TINY, backbone_norm="batch", trainable_backbone_layers=5, lr=0.005, warmup_steps=1,
                             export_path=str(export_path))
    trainer = L.Trainer(accelerator="cpu", max_steps=2, limit_val_batches=1, num_sanity_val_steps=0,
                        logger=CSVLogger(tmp_path, name="csv"), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=_datamodule(cityscapes_demo))
    metrics = trainer.callback_metrics
    for name in ("train/loss", "train/loss_mask", "train/loss_objectness"):
        assert math.isfinite(metrics[name].item())
    assert 0.0 <= metrics["val/ap50"].item() <= 1.0
    assert list((Path(trainer.default_root_dir) / "images").rglob("*.png"))

    loaded = load_exported_detector(export_path, expected={"num_classes": 9, "architecture": "mask_rcnn_resnet18_fpn"})
    assert not loaded.training and not any(parameter.requires_grad for parameter in loaded.parameters())
    frames = torch.randint(0, 256, (1, 3, 64, 128), dtype=torch.uint8)
    for ours, theirs in zip(detect(model.detector, frames), detect(loaded, frames)):
        assert torch.equal(ours["scores"], theirs["scores"]) and torch.equal(ours["masks"], theirs["masks"])


def test_loading_refuses_other_files_and_mismatching_detectors(tmp_path: Path):
    path = export_detector(build_mask_rcnn(**{key: TINY[key] for key in ("backbone", "min_size", "max_size")}),
                           tmp_path / "detector.pt")
    with pytest.raises(ValueError, match=r"detector\.pt is incompatible: num_classes is 9, expected 91"):
        load_exported_detector(path, expected={"num_classes": 91})
    with pytest.raises(ValueError, match="architecture is 'mask_rcnn_resnet18_fpn', expected 'mask_rcnn_resnet50"):
        load_exported_detector(path, expected={"architecture": "mask_rcnn_resnet50_fpn"})
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match=r"other\.pt is not a genforecast Mask R-CNN detector file"):
        load_exported_detector(other)
    with pytest.raises(FileNotFoundError, match="configs/f2f/detector.yaml"):
        load_exported_detector(tmp_path / "missing.pt")
    payload = torch.load(path, weights_only=True)
    payload["detector"]["backbone"] = "mobilenet_v3"
    torch.save(payload, other)
    with pytest.raises(ValueError, match=r"other\.pt does not hold a loadable mask_rcnn_resnet18_fpn detector"):
        load_exported_detector(other)


def test_overlay_paints_masks_in_class_colours():
    frame = torch.zeros(3, 4, 4, dtype=torch.uint8)
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    painted = overlay_instances(frame, masks, torch.tensor([26]))  # car: (0, 0, 142)
    assert painted[:, 2:].eq(0).all() and painted[2, :2].gt(0).all() and painted[:2, :2].eq(0).all()
    assert label_ids_to_detector_labels(torch.tensor([26])).item() == 3
