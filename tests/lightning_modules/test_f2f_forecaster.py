"""F2FForecaster: feature-space losses, recursive forecasting through the frozen heads, the paper's table rows."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import lightning_modules.f2f_forecaster as f2f_module
from datamodules.cityscapes import CityscapesSequenceDataModule
from lightning_modules.f2f_forecaster import F2FForecaster, cached_feature_key, semantic_from_instances
from metrics.instance_ap import CityscapesInstanceAP
from metrics.segmentation import SegmentationIoU
from networks.f2f import derive_p6


def _model(detector_weights: Path, **options) -> F2FForecaster:
    torch.manual_seed(0)
    return F2FForecaster(str(detector_weights), width_multiplier=1 / 32, **options)


def _frames(count: int = 2, steps: int = 7) -> torch.Tensor:
    return torch.randint(0, 256, (count, steps, 3, 64, 128), generator=torch.Generator().manual_seed(1),
                         dtype=torch.uint8)


def test_autoregressive_loss_is_feature_mse_over_windows_and_scales(detector_weights: Path):
    model = _model(detector_weights, train_levels=["p5", "p2"])
    sequence, _ = model.features(_frames())
    losses = model.training_losses(sequence)
    assert set(losses) == {"p5", "p2"}
    for level in ("p5", "p2"):
        windows = torch.cat([sequence[level][:, step:step + 4] for step in range(3)])
        targets = torch.cat([sequence[level][:, 4 + step] for step in range(3)])
        predictions = model.network({level: windows}, [level])[level]
        expected = sum(((prediction - F.avg_pool2d(targets, 2 ** (len(predictions) - 1 - scale))
                         if scale < len(predictions) - 1 else prediction - targets) ** 2).mean()
                       for scale, prediction in enumerate(predictions))
        torch.testing.assert_close(losses[level], expected)


def test_forecast_features_are_recursive_and_derive_p6(detector_weights: Path):
    model = _model(detector_weights)
    sequence, _ = model.features(_frames())
    forecast = model.forecast_features(sequence)
    assert set(forecast) == {"p2", "p3", "p4", "p5", "p6"}
    torch.testing.assert_close(forecast["p6"], derive_p6(forecast["p5"]))
    assert forecast["p2"].shape == sequence["p2"][:, -1].shape


def test_semantic_conversion_paints_in_ascending_score_order():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2], masks[1, 1:3] = True, True
    prediction = {"masks": masks, "labels": torch.tensor([26, 24]), "scores": torch.tensor([0.9, 0.6])}
    semantic = semantic_from_instances([prediction], (4, 4))[0]
    # car (label 26, train id 13) scores higher: painted last, it wins the overlap row 1
    assert semantic[1].tolist() == [13] * 4 and semantic[2].tolist() == [11] * 4 and semantic[3].tolist() == [0] * 4


def test_mismatching_detector_is_refused_before_training(detector_weights: Path):
    with pytest.raises(ValueError, match=str(detector_weights.name)):
        F2FForecaster(str(detector_weights), expected_detector={"num_classes": 5})


def _instances_as_predictions(instances: torch.Tensor) -> dict[str, torch.Tensor]:
    """A frame's ground-truth instance map (H, W) as perfect detections: label ids, masks, score 1."""
    ids = instances.unique()
    ids = ids[ids >= 1000]
    return {"masks": instances[None] == ids[:, None, None], "labels": ids.long() // 1000,
            "scores": torch.ones(len(ids)), "boxes": torch.zeros(len(ids), 4)}


def _validation_batches(cityscapes_demo: Path, tmp_path: Path) -> tuple[CityscapesSequenceDataModule, list[dict]]:
    datamodule = CityscapesSequenceDataModule(str(cityscapes_demo), horizon="mid", resolution=(64, 128), crop_size=None,
                                              batch_size=2, val_batch_size=2, load_all_frame_labels=True,
                                              cache_dir=str(tmp_path / "cache"))
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, list(datamodule.val_dataloader())


def test_fit_and_validate_score_what_the_batch_implies(detector_weights: Path, cityscapes_demo: Path, tmp_path,
                                                        monkeypatch):
    datamodule, batches = _validation_batches(cityscapes_demo, tmp_path)
    model = _model(detector_weights, mode="ar_finetune", max_detections=5)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=datamodule)
    # a detector that finds exactly each frame's annotated objects: the baselines' scores follow from the batch
    objects = {frame.numpy().tobytes(): instances for batch in batches
               for frame, instances in zip(batch["frames"].flatten(0, 1), batch["frame_instances"].flatten(0, 1))}
    monkeypatch.setattr(f2f_module, "detect", lambda detector, frames: [
        _instances_as_predictions(objects[frame.cpu().numpy().tobytes()]) for frame in frames])
    metrics = trainer.validate(model, datamodule=datamodule, verbose=False)[0]

    expected = {"copy_last": (CityscapesInstanceAP(), SegmentationIoU()), "oracle": (CityscapesInstanceAP(),
                                                                                     SegmentationIoU())}
    for batch in batches:
        for name, frame in (("copy_last", 3), ("oracle", -1)):
            predictions = [_instances_as_predictions(instances) for instances in batch["frame_instances"][:, frame]]
            expected[name][0].update(predictions, list(batch["instances"]))
            expected[name][1].update(semantic_from_instances(predictions, (64, 128)), batch["labels"].long())
    for name, (instance_ap, semantic_iou) in expected.items():
        assert metrics[f"val/{name}/ap"] == pytest.approx(float(instance_ap.compute()["ap"]), abs=1e-6)
        assert metrics[f"val/{name}/ap50"] == pytest.approx(float(instance_ap.compute()["ap50"]), abs=1e-6)
        assert metrics[f"val/{name}/mo_miou"] == pytest.approx(float(semantic_iou.compute()["mo_miou"]), abs=1e-6)
    assert metrics["val/oracle/ap"] == pytest.approx(1.0) and metrics["val/copy_last/ap"] < 1.0
    assert 0.0 <= metrics["val/optical_flow/ap50"] <= 1.0 and 0.0 <= metrics["val/model/ap50"] <= 1.0


def test_metrics_without_ground_truth_are_nan_not_zero(detector_weights: Path, cityscapes_demo: Path, tmp_path):
    _, batches = _validation_batches(cityscapes_demo, tmp_path)

    class WithoutObjects(L.LightningDataModule):
        def val_dataloader(self):
            return DataLoader([batch | {"instances": torch.zeros_like(batch["instances"]),
                                        "labels": torch.zeros_like(batch["labels"])} for batch in batches],
                              batch_size=None)

    model = _model(detector_weights, max_detections=5, evaluate_baselines=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    metrics = trainer.validate(model, datamodule=WithoutObjects(), verbose=False)[0]
    assert math.isnan(metrics["val/model/ap"]) and math.isnan(metrics["val/model/ap50"])
    assert math.isnan(metrics["val/model/mo_miou"])


def test_residual_forecaster_starts_from_copy_last(detector_weights: Path):
    model = _model(detector_weights, residual=True)
    sequence, _ = model.features(_frames(steps=5))
    for level in ("p5", "p2"):
        window = sequence[level][:, :4]
        predictions = model.forecast_level(level, window)
        torch.testing.assert_close(predictions[-1], window[:, -1])
        torch.testing.assert_close(predictions[0], F.avg_pool2d(window[:, -1], 2 ** (len(predictions) - 1)))


@pytest.mark.filterwarnings("ignore:.*self.trainer. reference is not registered")
def test_training_step_on_cached_features_skips_the_detector(detector_weights: Path, monkeypatch):
    model = _model(detector_weights, train_levels=["p5"])
    monkeypatch.setattr(f2f_module, "losses_are_finite", lambda *args: True)  # needs a Trainer otherwise
    frames = _frames()
    live_loss = model.training_step({"frames": frames}, 0)
    features, _ = model.features(frames)
    cached = features["p5"].half()
    monkeypatch.setattr(F2FForecaster, "features", lambda self, frames: pytest.fail("the detector ran"))
    loss = model.training_step({"frames": frames, cached_feature_key("p5"): cached}, 0)
    torch.testing.assert_close(loss, sum(model.training_losses({"p5": cached.float()}).values()))
    torch.testing.assert_close(loss, live_loss, rtol=1e-2, atol=0.0)

    model.train_levels = ("p5", "p4")  # features_p4 missing: back to the detector
    with pytest.raises(pytest.fail.Exception, match="the detector ran"):
        model.training_step({"frames": frames, cached_feature_key("p5"): cached}, 0)
