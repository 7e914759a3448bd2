"""``genforecast predict``: every model's ``predict_step`` through ``Trainer.predict`` and the files the writer leaves."""

from __future__ import annotations

import copy
from pathlib import Path

import av
import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.cityscapes import CityscapesSequenceDataModule
from datamodules.distance_map_planes import DistanceMapDataModule
from datamodules.fashion import FashionCatalogueDataModule
from datamodules.segmentation_scores import SegmentationScoreDataModule
from datamodules.ucf101 import UCF101DataModule
from genforecast.prediction import PredictionWriter
from lightning_modules import (
    F2FForecaster,
    FashionCAN,
    FrameGAN,
    JointForecaster,
    MaskRCNNFinetune,
    SegForecastAR,
    SemanticSegmenter,
)
from metrics.cityscapes_labels import train_id_colors
from tests.metrics.cityscapes_reference import INSTANCE_EVALUATOR, official_evaluator, official_instance_ap_of_files

# The writer names files from the batches, not from the batch indices Lightning tracks for DataLoader batch samplers.
pytestmark = pytest.mark.filterwarnings("ignore:Couldn't infer the batch indices fetched from your dataloader")

VAL_TARGETS = ["demoville_000000_000019", "demoville_000001_000119"]
"""The annotated frames of the Cityscapes demo's val snippets: the targets of the final forecast step."""


def _predict(model: L.LightningModule, datamodule: L.LightningDataModule, output_dir: Path) -> list:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=output_dir.parent,
                        callbacks=[PredictionWriter(output_dir)])
    return trainer.predict(model, datamodule=datamodule)


def _pixels(images: torch.Tensor) -> np.ndarray:
    """Images (..., 3, H, W) in [-1, 1] as the 0..255 values a PNG stores, (..., H, W, 3)."""
    return np.clip(np.round((images.numpy() + 1) * 127.5), 0, 255).transpose(*range(images.dim() - 3), -2, -1, -3)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _read_instances(pred_file: Path) -> list[tuple[np.ndarray, int, float]]:
    """(mask, label id, score) per line of a Cityscapes ``*_pred.txt``, masks read relative to it."""
    rows = []
    for line in pred_file.read_text().splitlines():
        mask_path, label_id, score = line.split(" ")
        rows.append((_png(pred_file.parent / mask_path), int(label_id), float(score)))
    return rows


def _check_instances(pred_file: Path, instances: dict[str, torch.Tensor]) -> None:
    rows = _read_instances(pred_file)
    assert len(rows) == len(instances["scores"])
    for (mask, label_id, score), expected_mask, expected_label, expected_score in zip(
            rows, instances["masks"], instances["labels"], instances["scores"]):
        assert set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, expected_mask.numpy())
        assert label_id == int(expected_label) and np.float32(score) == expected_score.numpy()


def _check_segmentation(folder: Path, name: str, train_ids: torch.Tensor) -> None:
    stored = _png(folder / f"{name}_trainIds.png")
    np.testing.assert_array_equal(stored, train_ids.numpy())
    np.testing.assert_array_equal(_png(folder / f"{name}_color.png"), train_id_colors()[stored])


def _official_ap(results: Path, step_folder: Path, cityscapes_root: Path) -> dict:
    """The official instance evaluator on a step folder: it finds each val frame's prediction file itself."""
    ground_truth = sorted(str(path) for path in (cityscapes_root / "gtFine" / "val").rglob("*_gtFine_instanceIds.png"))
    with official_evaluator(INSTANCE_EVALUATOR, results.parent) as evaluator:
        args = copy.copy(evaluator.args)
        args.predictionPath, args.predictionWalk = str(step_folder.resolve()), None
        prediction_files = [evaluator.getPrediction(path, args) for path in ground_truth]
    assert [Path(path).name for path in prediction_files] == [f"{name}_pred.txt" for name in VAL_TARGETS]
    return official_instance_ap_of_files(prediction_files, ground_truth, results.parent, min_region_size=10)


def test_fashion_can_writes_seeded_samples_per_variant_with_grids(fashion_catalogue: Path, tmp_path: Path):
    datamodule = FashionCatalogueDataModule(str(fashion_catalogue), resolution=32, batch_size=4, num_samples=6,
                                            cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = FashionCAN(resolution=32, base_channels=8, conditioning="shape_mask", creativity="holistic")
    outputs = _predict(model, datamodule, tmp_path / "predictions")
    folder = tmp_path / "predictions" / "samples" / "holistic"
    names = [f"{index:06d}" for index in range(6)]
    assert sorted(path.stem for path in folder.glob("0*.png")) == names
    assert sorted(path.name for path in folder.glob("grid_*.png")) == ["grid_000000.png", "grid_000004.png"]
    samples = torch.cat([output["samples"] for output in outputs])
    for name, sample in zip(names, samples):
        np.testing.assert_allclose(_png(folder / f"{name}.png"), _pixels(sample), atol=1)
    # shape-conditioned: painted into the masks of the val garments, in order
    masks = torch.cat([output["masks"] for output in outputs])
    torch.testing.assert_close(masks, datamodule.val_set.masks[:6].float())
    # sample 5 alone (another batch size and position) is the same image: its latent is seeded by its number
    alone = model.eval().predict_step(datamodule.predict_dataloader().dataset[torch.tensor([5])], 0)
    torch.testing.assert_close(alone["samples"][0], samples[5])


def test_frame_gan_writes_strips_and_videos(ucf101_demo: Path, tmp_path: Path):
    datamodule = UCF101DataModule(str(ucf101_demo), eval_stride=1, frame_size=(32, 40), patch_size=16,
                                  val_batch_size=1, cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = FrameGAN(width_multiplier=1 / 16, lambda_adv=0.0, evaluate_baselines=False)
    outputs = _predict(model, datamodule, tmp_path / "predictions")
    folder = tmp_path / "predictions" / "frames"
    assert len(outputs) == len(datamodule.predict_names) == 2
    for output in outputs:
        (name,) = output["name"]
        assert output["predicted"].shape == output["targets"].shape == (1, 2, 3, 32, 40)
        clip = torch.cat([output["inputs"][0], output["predicted"][0], output["targets"][0]])
        np.testing.assert_allclose(_png(folder / f"{name}.png"), np.concatenate(list(_pixels(clip)), axis=1), atol=1)
        with av.open(str(folder / f"{name}.mp4")) as video:
            frames = [frame.to_ndarray(format="rgb24") for frame in video.decode(video=0)]
        assert len(frames) == 6 and frames[0].shape == (32, 40, 3)


def test_seg_forecast_writes_train_id_and_colour_pngs_per_step(cityscapes_demo: Path, segmenter_weights: Path,
                                                               tmp_path: Path):
    datamodule = SegmentationScoreDataModule(str(cityscapes_demo), segmenter_weights=str(segmenter_weights),
                                             horizon="mid", resolution=(64, 128), crop_size=None, val_batch_size=2,
                                             cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = SegForecastAR(width_multiplier=1 / 8, evaluate_baselines=False)
    (output,) = _predict(model, datamodule, tmp_path / "predictions")
    assert output["steps"] == [1, 2, 3] and output["segmentation"].shape == (2, 3, 64, 128)
    # step k forecasts the frame 3 * (3 - k) snippet frames before the annotated one
    assert [names[-1] for names in output["target_names"]] == VAL_TARGETS
    assert output["target_names"][0][0] == "demoville_000000_000013"
    for sample, names in enumerate(output["target_names"]):
        for position, name in enumerate(names):
            folder = tmp_path / "predictions" / "segmentation" / f"step{position + 1}"
            _check_segmentation(folder, name, output["segmentation"][sample, position])


def test_f2f_writes_cityscapes_instance_results_per_step(cityscapes_demo: Path, detector_weights: Path,
                                                         tmp_path: Path):
    datamodule = CityscapesSequenceDataModule(str(cityscapes_demo), horizon="mid", resolution=(64, 128),
                                              crop_size=None, val_batch_size=2, cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = F2FForecaster(str(detector_weights), width_multiplier=1 / 32, max_detections=5)
    results = tmp_path / "eval" / "results"
    (output,) = _predict(model, datamodule, results)
    assert output["steps"] == [1, 2, 3]
    assert sum(len(step["scores"]) for sample in output["instances"] for step in sample) > 0
    for sample, names in enumerate(output["target_names"]):
        for position, name in enumerate(names):
            _check_instances(results / "instances" / f"step{position + 1}" / f"{name}_pred.txt",
                             output["instances"][sample][position])
    # the official evaluator finds, parses and scores the final step's files (an untrained detector's score is moot)
    assert set(_official_ap(results, results / "instances" / "step3", cityscapes_demo)) >= {"ap", "ap50"}


def test_joint_forecaster_writes_segmentation_and_instances_read_by_cityscapesscripts(cityscapes_demo: Path,
                                                                                      tmp_path: Path):
    datamodule = DistanceMapDataModule(str(cityscapes_demo), horizon="mid", resolution=(64, 128), crop_size=None,
                                       val_batch_size=2, cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = JointForecaster(width_multiplier=0.125, residual=True, evaluate_baselines=False)
    results = tmp_path / "eval" / "results"
    (records,) = _predict(model, datamodule, results)
    assert [record["name"] for record in records] == VAL_TARGETS and {record["step"] for record in records} == {3}
    for record in records:
        _check_segmentation(results / "segmentation" / "step3", record["name"], record["semantic"])
        _check_instances(results / "instances" / "step3" / f"{record['name']}_pred.txt", record)
    # the residual model starts from copy-last: its instances are the last input's objects, near the target's
    assert _official_ap(results, results / "instances" / "step3", cityscapes_demo)["ap50"] > 0


@pytest.mark.filterwarnings("ignore:.*in eval mode.*")
def test_segmenter_and_detector_write_the_observed_frame_as_step_zero(cityscapes_demo: Path, tmp_path: Path):
    datamodule = CityscapesSequenceDataModule(str(cityscapes_demo), horizon="short", resolution=(64, 128),
                                              crop_size=None, val_batch_size=2, cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    segmenter = SemanticSegmenter("lraspp_mobilenet_v3_large")
    (segmented,) = _predict(segmenter, datamodule, tmp_path / "predictions")
    detector = MaskRCNNFinetune(backbone="resnet18", min_size=64, max_size=128, box_head_size=64,
                                mask_head_channels=16)
    (detected,) = _predict(detector, datamodule, tmp_path / "predictions")
    for sample, name in enumerate(VAL_TARGETS):
        _check_segmentation(tmp_path / "predictions" / "segmentation" / "step0", name,
                            segmented["segmentation"][sample, 0])
        _check_instances(tmp_path / "predictions" / "instances" / "step0" / f"{name}_pred.txt",
                         detected["instances"][sample][0])
