"""JointForecaster: joint future semantic and instance segmentation (Couprie, Luc & Verbeek, ECCV Workshops 2018).

Each past frame is represented by per-class distance-based maps of its objects (see
:mod:`representations.distance_map_encoding`: 0 off the class, 1 inside, rising to 2 on instance contours); a small
convnet forecasts the maps of the next frame from the last 4 (the S2S architectures of
:mod:`networks.segmentation_forecast` on 19 input and output channels; the default two-scale network at width
0.65 has 0.80M parameters, the paper's size). Future semantic segmentation is the argmax of the forecast; future
instances come from the past objects' centroids, extrapolated linearly and used as seeds of a watershed of the
forecast (:func:`representations.distance_map_encoding.decode_instances`). Every forecast instance carries
``track_ids``, the id of the past object it continues (its instance id for annotations, a track number for
detections): tracking comes for free, and ``predict_step`` returns it.

Training: ``L_p`` + GDL at every scale of the network (weights 1) against the next frame's maps, with ``p = 2`` by
default (the papers do not state the loss; docs/joint.md says why not S2S's l1), in the S2S modes
(:func:`networks.forecasting.training_pairs`): ``autoregressive`` and ``ar_finetune``; short term is 1 step, mid
term 3 (autoregressive at test time).

Evaluation on the annotated target frame with the suite's evaluators: mIoU / MO-mIoU (:class:`SegmentationIoU`)
and Cityscapes instance AP / AP50 (:class:`CityscapesInstanceAP`), beside copy-last (the last input frame's
segmentation and instances) and the optical-flow warp of them. On the demo set the past frames' objects are the
annotations, so the copy row here copies ground truth, whereas F2F's copy row runs the detector.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch

from baselines.optical_flow import batch_flow, extrapolate, warp_masks
from datamodules.augment import to_unit_range
from datamodules.prediction import target_names
from lightning_modules.guard import NonFinitePolicy, losses_are_finite
from lightning_modules.initial_weights import initial_state
from lightning_modules.step_logging import logs_this_step
from lightning_modules.visuals import image_grid, log_image, log_segmentation_masks
from losses import multiscale_reconstruction_loss
from metrics.cityscapes_labels import NUM_EVALUATED_CLASSES, TRAIN_ID_NAMES, train_id_colors
from metrics.instance_ap import CityscapesInstanceAP
from metrics.segmentation import SegmentationIoU
from networks.forecasting import training_pairs, unroll
from networks.segmentation_forecast import ResidualForecaster, make_segmentation_forecaster
from representations.distance_map_encoding import (
    DecodedInstances,
    TrackLinking,
    decode_instances,
    expand,
    instances_of_frame,
    link_tracks,
)

PREDICTORS = ("model", "copy_last", "optical_flow")


class JointForecaster(L.LightningModule):
    """Forecasts distance-map representations and decodes them (see the module docstring).

    Args:
        architecture: ``"multiscale"`` (two scales) or ``"dilated"``; width_multiplier scales its widths.
        mode: ``"autoregressive"`` or ``"ar_finetune"``; horizon_steps: 1 short term, 3 mid term (must match the
            data's horizon).
        lambda_lp, lambda_gdl: loss weights (1 and 1); reconstruction_p: the exponent ``p`` of the ``L_p`` term.
        optimizer, lr: ``"adam"`` (default) or ``"sgd"``.
        residual: forecast the change from the last input frame, starting from copy-last
            (:class:`ResidualForecaster`); not in the paper, used by the CPU demo.
        init_weights: a checkpoint of this module to start from (AR fine-tuning starts from an AR model).
        track_linking: how past objects are linked: ``"ids"`` (annotations' instance ids are track ids) or
            ``"centroids"`` (detections).
        snap_radius: pixels a seed may move to land on its class in the forecast.
        evaluate_baselines: also score copy-last and the flow warp.
        channels_last: keep the network's weights in NHWC layout (its convolutions then run NHWC: faster on tensor
            cores).
    """

    def __init__(
        self,
        architecture: Literal["multiscale", "dilated"] = "multiscale",
        width_multiplier: float = 0.65,
        mode: Literal["autoregressive", "ar_finetune"] = "autoregressive",
        horizon_steps: int = 3,
        num_input_frames: int = 4,
        lambda_lp: float = 1.0,
        lambda_gdl: float = 1.0,
        reconstruction_p: float = 2.0,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 1e-3,
        residual: bool = False,
        init_weights: str | None = None,
        track_linking: TrackLinking = "ids",
        snap_radius: int = 8,
        evaluate_baselines: bool = True,
        log_sequences: int = 2,
        channels_last: bool = False,
        nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        network = make_segmentation_forecaster(architecture, NUM_EVALUATED_CLASSES, NUM_EVALUATED_CLASSES,
                                               num_input_frames, width_multiplier)
        self.network = ResidualForecaster(network) if residual else network
        if channels_last:
            self.network.to(memory_format=torch.channels_last)
        if init_weights is not None:
            self.load_state_dict(initial_state(init_weights, type(self)))
        self.skipped_steps = 0
        predictors = PREDICTORS if evaluate_baselines else PREDICTORS[:1]
        self.semantic_iou = torch.nn.ModuleDict({name: SegmentationIoU() for name in predictors})
        self.instance_ap = torch.nn.ModuleDict({name: CityscapesInstanceAP() for name in predictors})

    # ---- forecasting --------------------------------------------------------------------------------------

    @staticmethod
    def representation(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The per-class maps (B, T, 19, h, w) of every frame of the batch."""
        return expand(batch["frame_classes"], batch["frame_values"].float(), NUM_EVALUATED_CLASSES)

    def _reconstruction(self, predictions: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        return multiscale_reconstruction_loss(predictions, target, hp.lambda_lp, hp.lambda_gdl, hp.reconstruction_p)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``L_p`` + GDL at every scale, summed over the predicted steps (see the module docstring for the modes)."""
        hp = self.hparams
        pairs = training_pairs(self.network, self.representation(batch), hp.num_input_frames, hp.horizon_steps,
                               hp.mode)
        return sum(self._reconstruction(scales, target) for scales, target in zip(pairs.predictions, pairs.targets))

    @torch.no_grad()
    def forecast(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The forecast maps (B, 19, h, w) of the target frame, recursively from the input frames."""
        sequence = self.representation(batch)
        return unroll(self.network, sequence[:, :self.hparams.num_input_frames], self.hparams.horizon_steps,
                      detach=True)[-1][-1]

    def decode(self, batch: dict[str, torch.Tensor], forecast: torch.Tensor) -> list[DecodedInstances]:
        """Future instances of each sample from its forecast and its input frames' objects."""
        hp = self.hparams
        past = batch["frame_instances"][:, :hp.num_input_frames].cpu().numpy()
        maps = forecast.float().cpu().numpy()
        target_time = hp.num_input_frames - 1 + hp.horizon_steps
        return [decode_instances(maps[index], link_tracks(list(past[index]), hp.track_linking), target_time,
                                 hp.snap_radius) for index in range(len(maps))]

    # ---- training -----------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        loss = self.training_loss(batch)
        if not losses_are_finite(self, {"loss": loss}, "forecaster", self.hparams.nonfinite):
            self.skipped_steps += 1
            return None
        if logs_this_step(self):
            self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.hparams.optimizer == "sgd":
            return torch.optim.SGD(self.network.parameters(), lr=self.hparams.lr, momentum=0.9)
        return torch.optim.Adam(self.network.parameters(), lr=self.hparams.lr)

    # ---- evaluation ---------------------------------------------------------------------------------------

    def _baselines(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, list[DecodedInstances]]]:
        hp = self.hparams
        last = hp.num_input_frames - 1
        last_classes = batch["frame_classes"][:, last].long()
        last_instances = batch["frame_instances"][:, last].cpu().numpy()
        copied = [instances_of_frame(instances) for instances in last_instances]
        frames = to_unit_range(batch["frames"])
        flow = batch_flow(frames[:, last - 1], frames[:, last])
        warped_classes = extrapolate(last_classes[:, None].float(), flow, steps=hp.horizon_steps,
                                     interpolation="nearest")[:, 0].long()
        warped = [DecodedInstances(warp_masks(torch.from_numpy(instances.masks), flow[index], hp.horizon_steps).cpu()
                                   .numpy(), instances.label_ids, instances.scores, instances.track_ids)
                  for index, instances in enumerate(copied)]
        return {"copy_last": (last_classes, copied), "optical_flow": (warped_classes, warped)}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        forecast = self.forecast(batch)
        outputs = {"model": (forecast.argmax(dim=1), self.decode(batch, forecast))}
        if "copy_last" in self.semantic_iou:
            outputs |= self._baselines(batch)
        targets = list(batch["instances"])
        for name, (semantic, instances) in outputs.items():
            self.semantic_iou[name].update(semantic, batch["labels"].long())
            self.instance_ap[name].update([decoded.as_prediction(self.device) for decoded in instances], targets)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_forecasts(batch, outputs["model"][0])

    def on_validation_epoch_end(self) -> None:
        metrics = {}
        for name in self.semantic_iou:
            semantic = self.semantic_iou[name].compute()
            instance = self.instance_ap[name].compute()
            metrics |= {f"val/{name}/miou": semantic["miou"], f"val/{name}/mo_miou": semantic["mo_miou"],
                        f"val/{name}/ap": instance["ap"], f"val/{name}/ap50": instance["ap50"]}
            self.semantic_iou[name].reset()
            self.instance_ap[name].reset()
        # NaN (no ground-truth instance or class to score) is logged as NaN: a 0 would read as a measured score.
        self.log_dict({key: torch.as_tensor(value, dtype=torch.float32) for key, value in metrics.items()})

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[dict[str, Any]]:
        """Per sample: ``semantic`` trainIds (h, w) and the forecast instances ``masks``, ``labels`` (label ids),
        ``scores`` and ``track_ids`` (the past object each instance continues, 0 for an object first seen in the
        forecast), plus the dataset ``index`` of the sample, the ``name`` of the target frame (see
        :func:`datamodules.prediction.target_names`) and the future ``step`` it is (``horizon_steps``)."""
        forecast = self.forecast(batch)
        semantic = forecast.argmax(dim=1)
        names = [targets[-1] for targets in target_names(batch, 1)]
        return [{"index": int(index), "name": name, "step": self.hparams.horizon_steps, "semantic": labels.cpu(),
                 **decoded.as_prediction()}
                for index, name, labels, decoded in zip(batch["index"], names, semantic, self.decode(batch, forecast))]

    def _log_forecasts(self, batch: dict[str, torch.Tensor], semantic: torch.Tensor) -> None:
        count = min(self.hparams.log_sequences, semantic.shape[0])
        palette = torch.from_numpy(train_id_colors()).to(semantic.device)
        last_input = batch["frame_classes"][:count, self.hparams.num_input_frames - 1].long()
        target = batch["labels"][:count].long()
        rows = [palette[labels].permute(0, 3, 1, 2).float() / 127.5 - 1 for labels in (last_input, semantic[:count],
                                                                                          target)]
        grid = image_grid(torch.stack(rows, dim=1).flatten(0, 1), nrow=3)
        log_image(self.trainer, "forecasts/last input|forecast|ground truth", grid,
                  caption=f"step {self.global_step}")
        log_segmentation_masks(self.trainer, "forecasts/target frame", to_unit_range(batch["frames"][0, -1]),
                               {"forecast": semantic[0], "ground truth": target[0]}, TRAIN_ID_NAMES)

