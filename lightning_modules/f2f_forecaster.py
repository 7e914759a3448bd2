"""F2FForecaster: future instance segmentation by forecasting Mask R-CNN FPN features (Luc et al., ECCV 2018).

A frozen Mask R-CNN (:class:`MaskRCNNFinetune`, loaded from ``detector_weights``) turns each past frame into its
FPN pyramid; one subnetwork per level (P5, P4, P3, and P2 at three scales) forecasts the next frame's features
from the features of 4 past frames; P6 is derived from the forecast P5 as in the FPN; the forecast pyramid goes
through the detector's frozen RPN, box and mask heads. Loss: mean squared error on the features, summed over
levels and scales. Training modes as for S2S (:func:`networks.forecasting.training_pairs`): ``autoregressive`` and
``ar_finetune``. The paper's schedule (P5 first, P4 and
P3 initialised from P5, P2 last, then AR fine-tuning) is a sequence of runs selecting ``train_levels`` and
``init_weights`` / ``initialise_levels_from`` (see ``configs/f2f/``).

Features are extracted on the fly from the cached frames (bf16 autocast on GPUs), or, for training, read from the
batch: :class:`datamodules.FPNFeatureDataModule` caches chosen levels once as float16 and adds them to batches as
``features_<level>`` (see :func:`cached_feature_key`); when they cover every level of ``train_levels``
``training_step`` skips the detector (on Cityscapes only the coarse levels fit a disk: docs/f2f.md). Validation
always runs the detector: detection needs the whole pyramid of the target frame and the baselines run it on real
frames.

Evaluation on the annotated target frame, as the paper: Cityscapes instance AP (0.5:0.95) and AP50 over the 8
classes, and the semantic conversion (instances with score >= 0.5 painted in ascending score order) scored with
MO-mIoU; beside the copy (detector on the last input frame), optical-flow warp of those masks and oracle
(detector on the target frame) baselines.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F

from baselines.optical_flow import batch_flow, warp_masks
from datamodules.augment import to_unit_range
from datamodules.prediction import sample_names, target_names
from lightning_modules.guard import NonFinitePolicy, losses_are_finite
from lightning_modules.initial_weights import initial_state
from lightning_modules.step_logging import logs_this_step
from lightning_modules.visuals import image_grid, instance_class_map, log_image, log_segmentation_masks
from metrics.cityscapes_labels import TRAIN_ID_NAMES, label_ids_to_train_ids
from metrics.instance_ap import CityscapesInstanceAP
from metrics.segmentation import SegmentationIoU
from networks.detector import DetectorFeatures, detect, detect_from_features, fpn_features, load_exported_detector
from networks.f2f import F2FNetwork, F2FSubnetwork, derive_p6
from networks.forecasting import add_last_frame, training_pairs, unroll, zero_

PREDICTORS = ("model", "copy_last", "optical_flow", "oracle")
FORECAST_LEVELS = ("p5", "p4", "p3", "p2")
NON_MOVING_TRAIN_ID = 0  # pixels no instance covers are painted "road": any class outside the 8 moving ones


def cached_feature_key(level: str) -> str:
    """The batch key of a level's cached features (float16 (B, T, 256, H_l, W_l)), e.g. ``features_p5``."""
    return f"features_{level}"


def semantic_from_instances(predictions: list[dict[str, torch.Tensor]], size: tuple[int, int],
                            score_threshold: float = 0.5) -> torch.Tensor:
    """Train-id maps (B, H, W) painting instances with ``score >= score_threshold`` in ascending score order."""
    maps = []
    for prediction in predictions:
        semantic = torch.full(size, NON_MOVING_TRAIN_ID, dtype=torch.long, device=prediction["scores"].device)
        keep = prediction["scores"] >= score_threshold
        order = prediction["scores"][keep].argsort()
        masks, train_ids = prediction["masks"][keep][order], label_ids_to_train_ids(prediction["labels"][keep][order])
        for mask, train_id in zip(masks, train_ids):
            semantic[mask] = train_id
        maps.append(semantic)
    return torch.stack(maps)


class F2FForecaster(L.LightningModule):
    """Forecasts the FPN features of a frozen Mask R-CNN (see the module docstring).

    Training batches with ``features_<level>`` for every trained level (see :class:`datamodules.FPNFeatureDataModule`)
    train on those without running the detector; other levels are extracted on the fly, as is everything in
    validation.

    Args:
        detector_weights: file exported by :class:`MaskRCNNFinetune`.
        expected_detector: description the detector must match (e.g. ``{"num_classes": 9}``): checked before
            training, with an error naming the file.
        train_levels: levels trained in this run (default: all of P5..P2); the others are not computed.
        p2_scales: scales of the P2 subnetwork (3 in the paper).
        width_multiplier: scales the subnetworks' hidden widths (1.0 = the paper's, about 65M parameters).
        mode: ``"autoregressive"`` or ``"ar_finetune"``; horizon_steps: 1 short term, 3 mid term.
        init_weights: checkpoint of this module to start from (a previous stage of the schedule).
        initialise_levels_from: e.g. ``{"p4": "p5", "p3": "p5"}``: copy subnetworks after loading ``init_weights``.
        lr, momentum, optimizer: the paper's SGD with Nesterov momentum 0.9, lr 0.01 (Adam 5e-5 for P2).
        residual: add the last input frame's features to every forecast, with each subnetwork's output layer
            zero-initialised so that training starts from copy-last. Not in the paper (default off); the CPU demo
            uses it because its few hundred steps are far too few to learn the features from scratch.
        semantic_score_threshold: instances painted in the semantic conversion (0.5).
        max_detections: detections kept per image by the detector's box head (Mask R-CNN's 100).
    """

    def __init__(
        self,
        detector_weights: str,
        expected_detector: dict[str, Any] | None = None,
        train_levels: Sequence[str] | None = None,
        p2_scales: int = 3,
        width_multiplier: float = 1.0,
        mode: Literal["autoregressive", "ar_finetune"] = "autoregressive",
        horizon_steps: int = 3,
        num_input_frames: int = 4,
        optimizer: Literal["sgd", "adam"] = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        init_weights: str | None = None,
        initialise_levels_from: dict[str, str] | None = None,
        residual: bool = False,
        semantic_score_threshold: float = 0.5,
        max_detections: int = 100,
        evaluate_baselines: bool = True,
        log_sequences: int = 2,
        nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.detector = load_exported_detector(detector_weights, expected_detector)
        self.detector.roi_heads.detections_per_img = max_detections
        self.network = F2FNetwork(levels=FORECAST_LEVELS, p2_scales=p2_scales, width_multiplier=width_multiplier,
                                  in_frames=num_input_frames)
        if residual:
            zero_(module.to_features for module in self.network.modules() if isinstance(module, F2FSubnetwork))
        self.train_levels = tuple(train_levels or FORECAST_LEVELS)
        unknown = sorted(set(self.train_levels) - set(FORECAST_LEVELS))
        if unknown:
            raise ValueError(f"train_levels {unknown} are not forecast levels {FORECAST_LEVELS}")
        if init_weights is not None:
            state = initial_state(init_weights, type(self))
            self.network.load_state_dict({key[len("network."):]: value for key, value in state.items()
                                          if key.startswith("network.")})
        for target, source in (initialise_levels_from or {}).items():
            self.network.initialise_from(source, target)
        # A stage trains some levels only; freezing the others keeps them out of DDP's gradient reduction, which
        # would otherwise wait for gradients they never get.
        for level, subnetwork in self.network.subnetworks.items():
            subnetwork.requires_grad_(level in self.train_levels)
        self.skipped_steps = 0
        predictors = PREDICTORS if evaluate_baselines else PREDICTORS[:1]
        self.instance_ap = torch.nn.ModuleDict({name: CityscapesInstanceAP() for name in predictors})
        self.semantic_iou = torch.nn.ModuleDict({name: SegmentationIoU() for name in predictors})

    def train(self, mode: bool = True) -> F2FForecaster:
        """Switch the forecaster's mode; the frozen detector always stays in eval mode."""
        super().train(mode)
        self.detector.eval()
        return self

    # ---- features -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def features(self, frames: torch.Tensor) -> tuple[dict[str, torch.Tensor], DetectorFeatures]:
        """Per level (B, T, 256, H_l, W_l) features of frames (B, T, 3, h, w), and the last frame's sizes."""
        batch, steps = frames.shape[:2]
        with torch.autocast(frames.device.type, dtype=torch.bfloat16, enabled=frames.device.type == "cuda"):
            pyramid = fpn_features(self.detector, frames.flatten(0, 1))
        per_level = {level: value.float().unflatten(0, (batch, steps)) for level, value in pyramid.features.items()}
        return per_level, pyramid

    # ---- training -----------------------------------------------------------------------------------------

    def forecast_level(self, level: str, window: torch.Tensor) -> list[torch.Tensor]:
        """Per-scale forecasts (coarse to fine) of one level from a window (B, T, 256, H_l, W_l)."""
        predictions = self.network({level: window}, [level])[level]
        return add_last_frame(predictions, window[:, -1]) if self.hparams.residual else predictions

    def _level_loss(self, predictions: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        loss = torch.zeros((), device=target.device)
        for scale, prediction in enumerate(predictions):
            factor = 2 ** (len(predictions) - 1 - scale)
            loss = loss + F.mse_loss(prediction, F.avg_pool2d(target, factor) if factor > 1 else target)
        return loss

    def training_losses(self, sequence: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """MSE per trained level, summed over steps and scales (see the module docstring for the modes)."""
        hp = self.hparams
        losses = {}
        for level in self.train_levels:
            pairs = training_pairs(partial(self.forecast_level, level), sequence[level], hp.num_input_frames,
                                   hp.horizon_steps, hp.mode)
            losses[level] = sum(self._level_loss(predictions, target)
                                for predictions, target in zip(pairs.predictions, pairs.targets))
        return losses

    def on_fit_start(self) -> None:
        """Refuse cached features made by another detector than this forecaster's, before the first step."""
        cache_detector = getattr(self.trainer.datamodule, "detector_weights", None)
        if cache_detector is None:
            return
        ours, theirs = Path(self.hparams.detector_weights), Path(cache_detector)
        if ours.resolve() != theirs.resolve() and ours.read_bytes() != theirs.read_bytes():
            raise ValueError(f"the data module caches the features of {theirs}, but this forecaster's detector is "
                             f"{ours}: train on the features of the detector that will decode the forecasts")

    def cached_features(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """The batch's cached features of every trained level as float32 on this device; None if any is missing."""
        keys = {level: cached_feature_key(level) for level in self.train_levels}
        if not all(key in batch for key in keys.values()):
            return None
        return {level: batch[key].to(self.device, torch.float32) for level, key in keys.items()}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        """Feature MSE of the trained levels: cached features when the batch has them all, else the detector's."""
        sequence = self.cached_features(batch)
        if sequence is None:
            sequence, _ = self.features(batch["frames"])
        losses = self.training_losses(sequence)
        loss = sum(losses.values())
        if not losses_are_finite(self, {"loss": loss}, "forecaster", self.hparams.nonfinite):
            self.skipped_steps += 1
            return None
        if logs_this_step(self):
            self.log_dict({f"train/mse_{level}": value.detach() for level, value in losses.items()})
            self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        parameters = [p for level in self.train_levels for p in self.network.subnetworks[level].parameters()]
        if hp.optimizer == "adam":
            return torch.optim.Adam(parameters, lr=hp.lr)
        return torch.optim.SGD(parameters, lr=hp.lr, momentum=hp.momentum, nesterov=hp.momentum > 0)

    # ---- forecasting and evaluation -----------------------------------------------------------------------

    @torch.no_grad()
    def forecast_feature_steps(self, sequence: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Per future step, the pyramid p2..p6 forecast recursively from the input frames' features (the last one is
        the target frame's)."""
        inputs, steps = self.hparams.num_input_frames, self.hparams.horizon_steps
        forecasts = {level: [scales[-1] for scales in unroll(partial(self.forecast_level, level),
                                                             sequence[level][:, :inputs], steps, detach=True)]
                     for level in FORECAST_LEVELS}
        return [{level: per_step[step] for level, per_step in forecasts.items()}
                | {"p6": derive_p6(forecasts["p5"][step])} for step in range(steps)]

    def forecast_features(self, sequence: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The target frame's pyramid p2..p6 forecast recursively from the input frames' features."""
        return self.forecast_feature_steps(sequence)[-1]

    def forecast_instances(self, frames: torch.Tensor, every_step: bool = False) -> list[list[dict[str, torch.Tensor]]]:
        """The detector heads' instances of the pyramids forecast from frames (B, T, 3, h, w): per future step (only
        the target frame's unless ``every_step``), per sample as :func:`detect_from_features` returns them."""
        sequence, pyramid = self.features(frames)
        batch_size = frames.shape[0]
        sizes = pyramid.image_sizes[:batch_size]
        originals = pyramid.original_sizes[:batch_size]
        pyramids = self.forecast_feature_steps(sequence)
        return [detect_from_features(self.detector, forecast, sizes, originals)
                for forecast in (pyramids if every_step else pyramids[-1:])]

    def _predictions(self, batch: dict[str, torch.Tensor]) -> dict[str, list[dict[str, torch.Tensor]]]:
        hp = self.hparams
        frames = batch["frames"]
        predictions = {"model": self.forecast_instances(frames)[-1]}
        if "copy_last" in self.instance_ap:
            last = frames[:, hp.num_input_frames - 1]
            copied = detect(self.detector, last)
            unit = to_unit_range(frames)
            flow = batch_flow(unit[:, hp.num_input_frames - 2], unit[:, hp.num_input_frames - 1])
            warped = [detection | {"masks": warp_masks(detection["masks"], flow[index], hp.horizon_steps)}
                      for index, detection in enumerate(copied)]
            predictions |= {"copy_last": copied, "optical_flow": warped, "oracle": detect(self.detector, frames[:, -1])}
        return predictions

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        size = tuple(batch["labels"].shape[-2:])
        targets = list(batch["instances"])
        predictions = self._predictions(batch)
        for name, predicted in predictions.items():
            self.instance_ap[name].update(predicted, targets)
            semantic = semantic_from_instances(predicted, size, self.hparams.semantic_score_threshold)
            self.semantic_iou[name].update(semantic, batch["labels"].long())
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_forecasts(batch, predictions["model"])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """The forecast instances of every future step of each sample, decoded as in validation.

        Returns ``{"name": list[str] (B), "steps": [1, ..., S] (S = horizon_steps), "target_names": list[list[str]]
        (B, S), the frame each step forecasts (see :func:`datamodules.prediction.target_names`), "instances":
        list[list[dict]] (B, S)}``, each instance dict (on the CPU, best first) holding ``masks`` bool (N, h, w),
        ``labels`` int64 (N,) Cityscapes label ids, ``scores`` float32 (N,) in [0, 1] and ``boxes`` float32 (N, 4)
        xyxy pixels.
        """
        per_step = self.forecast_instances(batch["frames"], every_step=True)
        instances = [[{key: value.cpu() for key, value in step[sample].items()} for step in per_step]
                     for sample in range(len(batch["frames"]))]
        return {"name": sample_names(batch), "steps": list(range(1, len(per_step) + 1)),
                "target_names": target_names(batch, len(per_step)), "instances": instances}

    def on_validation_epoch_end(self) -> None:
        metrics = {}
        for name in self.instance_ap:
            instance = self.instance_ap[name].compute()
            semantic = self.semantic_iou[name].compute()
            metrics |= {f"val/{name}/ap": instance["ap"], f"val/{name}/ap50": instance["ap50"],
                        f"val/{name}/mo_miou": semantic["mo_miou"]}
            self.instance_ap[name].reset()
            self.semantic_iou[name].reset()
        # NaN (no ground-truth instance or class to score) is logged as NaN: a 0 would read as a measured score.
        self.log_dict({key: torch.as_tensor(value, dtype=torch.float32) for key, value in metrics.items()})

    def _log_forecasts(self, batch: dict[str, torch.Tensor], predictions: list[dict[str, torch.Tensor]]) -> None:
        count = min(self.hparams.log_sequences, len(predictions))
        target = to_unit_range(batch["frames"][:count, -1])
        overlays = target.clone()
        palette = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]],
                               device=target.device)
        for index in range(count):
            keep = predictions[index]["scores"] >= self.hparams.semantic_score_threshold
            for number, mask in enumerate(predictions[index]["masks"][keep]):
                colour = palette[number % len(palette)][:, None]
                overlays[index][:, mask] = 0.5 * overlays[index][:, mask] + 0.5 * colour
        log_image(self.trainer, "forecasts/target frame|forecast instances",
                  image_grid(torch.stack([target, overlays], dim=1).flatten(0, 1), nrow=2),
                  caption=f"step {self.global_step}")
        forecast = predictions[0]
        log_segmentation_masks(self.trainer, "forecasts/target frame", target[0], {
            "forecast instances": instance_class_map(forecast["masks"], forecast["labels"], forecast["scores"],
                                                     self.hparams.semantic_score_threshold),
            "ground truth": batch["labels"][0]}, TRAIN_ID_NAMES)
