"""SegForecastAR: forecasting semantic segmentation (Luc, Neverova, Couprie, Verbeek, LeCun, ICCV 2017).

Variants (``modality``): S2S (past segmentation scores -> future scores, the paper's main model), X2X (RGB ->
RGB, segmented afterwards by the frozen segmenter) and XS2XS (both). Architectures: the two-scale network or the
dilated one. Three ways to reach the target frame ``t`` from the inputs ``t-12 .. t-3`` (short term, 1 step) or
``t-18 .. t-9`` (mid term, 3 steps of 0.18 s):

* ``batch``: one network predicts all future steps at once (its output stacks the steps on channels);
* ``autoregressive``: a one-step network trained on every one-step window of the sequence, applied recursively
  at test time (each prediction becomes the newest input);
* ``ar_finetune``: the autoregressive network unrolled over all steps in training with backpropagation through
  time (predictions are not detached), loss on every predicted step; start it from an autoregressive checkpoint
  with ``init_weights``.

Loss at every scale of the network: ``l_lp |P - Y|_p^p + l_gdl GDL(P, Y)`` (weights 1, alpha 1, ``p = 1``), plus an
adversarial term for the RGB variants through the shared adversarial machinery. Targets are the segmenter's
scores (and the RGB frames) of the future frames. Evaluation: mIoU over the 19 classes and MO-mIoU over the 8
moving-object classes on the annotated target frame, against the ground truth and against the segmenter's own
segmentation, beside the copy-last and optical-flow-warp baselines on the same sequences.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from baselines.optical_flow import batch_flow, extrapolate
from datamodules.augment import to_unit_range
from datamodules.prediction import sample_names, target_names
from lightning_modules.adversarial import AdversarialModule, CompileMode, LossTerms
from lightning_modules.guard import NonFinitePolicy
from lightning_modules.initial_weights import initial_state
from lightning_modules.renamed_hyperparameters import adopt_renamed
from lightning_modules.visuals import image_grid, log_image, log_segmentation_masks
from losses import discriminator_real_fake_loss, generator_non_saturating_loss, multiscale_reconstruction_loss
from metrics.cityscapes_labels import TRAIN_ID_NAMES, train_id_colors
from metrics.segmentation import SegmentationIoU
from networks.forecasting import TrainingPairs, training_pairs, unroll
from networks.multiscale_video import MultiscaleFrameDiscriminator, pyramid
from networks.segmentation_forecast import FORECAST_MODALITIES, ResidualForecaster, make_segmentation_forecaster
from networks.segmenter import load_exported_segmenter

Modality = Literal["S2S", "X2X", "XS2XS"]
Mode = Literal["batch", "autoregressive", "ar_finetune"]
PREDICTORS = ("model", "copy_last", "optical_flow")
REFERENCES = ("gt", "segmenter")


class SegForecastAR(AdversarialModule):
    """Semantic segmentation forecaster (see the module docstring for variants and modes).

    Args:
        modality: ``"S2S"``, ``"X2X"`` or ``"XS2XS"``.
        architecture: ``"multiscale"`` (two scales) or ``"dilated"``.
        mode: ``"batch"``, ``"autoregressive"`` or ``"ar_finetune"``.
        horizon_steps: future steps to the target frame (1 short term, 3 mid term); must match the data.
        num_input_frames: past frames (4).
        width_multiplier: scales the network's widths (1.0 = the paper's).
        lambda_lp, lambda_gdl, lambda_adv: loss weights; ``lambda_adv > 0`` adds the discriminator (RGB variants).
        reconstruction_p: exponent ``p`` of the ``L_p`` reconstruction term (1: the paper's l1; docs/joint.md says
            why the CPU demos use 2).
        lambda_l1: deprecated name of ``lambda_lp``, read from earlier checkpoints and configs.
        residual: forecast the change from the last input frame, starting from copy-last
            (:class:`~networks.segmentation_forecast.ResidualForecaster`; not in the paper, used by the CPU demo;
            one-step modes of S2S and XS2XS only).
        lr: SGD learning rate (the paper's 0.01); ``optimizer`` ``"sgd"`` or ``"adam"``.
        init_weights: a checkpoint of this module to start from (AR fine-tuning starts from an AR model).
        segmenter_weights: exported :class:`SemanticSegmenter` file; needed to segment RGB predictions (X2X).
        score_scale: scores are divided by this before entering the network and multiplied back after, so that
            RGB in [-1, 1] and scores have comparable magnitudes in XS2XS.
        evaluate_baselines: also score copy-last and flow warping on the validation sequences.
        channels_last: keep the forecaster and the discriminator in NHWC layout (faster convolutions on tensor
            cores).
    """

    def __init__(
        self,
        modality: Modality = "S2S",
        architecture: Literal["multiscale", "dilated"] = "multiscale",
        mode: Mode = "autoregressive",
        horizon_steps: int = 3,
        num_input_frames: int = 4,
        width_multiplier: float = 1.0,
        lambda_lp: float = 1.0,
        lambda_gdl: float = 1.0,
        lambda_adv: float = 0.0,
        reconstruction_p: float = 1.0,
        residual: bool = False,
        optimizer: Literal["sgd", "adam"] = "sgd",
        lr: float = 0.01,
        discriminator_lr: float = 0.01,
        crop_size: int = 64,
        init_weights: str | None = None,
        segmenter_weights: str | None = None,
        score_scale: float = 10.0,
        evaluate_baselines: bool = True,
        log_sequences: int = 4,
        channels_last: bool = False,
        gradient_clip_val: float | None = None,
        nonfinite: NonFinitePolicy = "stop",
        seed: int = 0,
        compile_mode: CompileMode | None = None,
        lambda_l1: float | None = None,
    ) -> None:
        super().__init__(gradient_clip_val=gradient_clip_val, nonfinite=nonfinite, seed=seed, compile_mode=compile_mode)
        self.save_hyperparameters(ignore=["lambda_l1"])
        adopt_renamed(self, "lambda_l1", "lambda_lp", lambda_l1)
        in_channels, out_channels = FORECAST_MODALITIES[modality]
        steps_per_call = horizon_steps if mode == "batch" else 1
        self.generator = make_segmentation_forecaster(architecture, in_channels, out_channels * steps_per_call,
                                                      num_input_frames, width_multiplier)
        if residual:
            if mode == "batch":
                raise ValueError("residual forecasts need a one-step mode (autoregressive or ar_finetune)")
            self.generator = ResidualForecaster(self.generator)
        self.discriminator = None
        if lambda_adv > 0:
            self.discriminator = MultiscaleFrameDiscriminator(num_input_frames=num_input_frames, channels=in_channels,
                                                              patch_size=crop_size, num_scales=2)
        if channels_last:
            for network in (self.generator, self.discriminator):
                if network is not None:
                    network.to(memory_format=torch.channels_last)
        self.segmenter = load_exported_segmenter(segmenter_weights) if segmenter_weights else None
        if self.segmenter is not None:
            self.segmenter.requires_grad_(False)
        if modality == "X2X" and self.segmenter is None:
            raise ValueError("X2X predicts RGB frames: set segmenter_weights to segment them for evaluation")
        if init_weights is not None:
            state = initial_state(init_weights, type(self))
            self.load_state_dict({k: v for k, v in state.items() if not k.startswith("segmenter.")}, strict=False)
        predictors = PREDICTORS if evaluate_baselines else PREDICTORS[:1]
        self.iou = torch.nn.ModuleDict({f"{predictor}__{reference}": SegmentationIoU()
                                        for predictor in predictors for reference in REFERENCES})

    def train(self, mode: bool = True) -> SegForecastAR:
        """Switch the forecaster's mode; the frozen segmenter always stays in eval mode."""
        super().train(mode)
        if self.segmenter is not None:
            self.segmenter.eval()
        return self

    # ---- representation -----------------------------------------------------------------------------------

    @property
    def uses_rgb(self) -> bool:
        return self.hparams.modality in ("X2X", "XS2XS")

    @property
    def uses_scores(self) -> bool:
        return self.hparams.modality in ("S2S", "XS2XS")

    def representation(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The network's view of every frame of the sequence: (B, T, C, h, w) with RGB and/or scaled scores."""
        parts = []
        if self.uses_rgb:
            parts.append(to_unit_range(batch["frames"]))
        if self.uses_scores:
            parts.append(batch["scores"].float() / self.hparams.score_scale)
        return torch.cat(parts, dim=2)

    def segment(self, frame: torch.Tensor) -> torch.Tensor:
        """Train-id map (B, h, w) of a predicted frame representation (B, C, h, w)."""
        if self.uses_scores:
            return frame[:, -19:].argmax(dim=1)
        return self.segmenter(frame.clamp(-1, 1)).argmax(dim=1)

    # ---- forecasting --------------------------------------------------------------------------------------

    def _steps(self, window: torch.Tensor, steps: int, detach: bool) -> list[list[torch.Tensor]]:
        """Per step, the network's per-scale predictions; recursive unless the mode is ``batch``."""
        network = self.network("generator")
        if self.hparams.mode == "batch":
            scales = network(window)
            channels = scales[-1].shape[1] // steps
            return [[scale[:, step * channels:(step + 1) * channels] for scale in scales] for step in range(steps)]
        return unroll(network, window, steps, detach)

    @torch.no_grad()
    def forecast_steps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The predicted representation (B, S, C, h, w) of each future frame up to the target (S = horizon_steps)."""
        sequence = self.representation(batch)
        steps = self._steps(sequence[:, : self.hparams.num_input_frames], self.hparams.horizon_steps, detach=True)
        return torch.stack([scales[-1] for scales in steps], dim=1)

    def forecast(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The predicted representation (B, C, h, w) of the target frame."""
        return self.forecast_steps(batch)[:, -1]

    def _reconstruction(self, predictions: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        return multiscale_reconstruction_loss(predictions, target, hp.lambda_lp, hp.lambda_gdl, hp.reconstruction_p)

    def _training_pairs(self, sequence: torch.Tensor) -> TrainingPairs:
        """The training mode's predictions and targets: one-step modes as :func:`networks.forecasting.training_pairs`,
        ``batch`` every step from the inputs at once."""
        hp = self.hparams
        if hp.mode != "batch":
            return training_pairs(self.network("generator"), sequence, hp.num_input_frames, hp.horizon_steps, hp.mode)
        inputs = sequence[:, : hp.num_input_frames]
        return TrainingPairs(inputs, self._steps(inputs, hp.horizon_steps, detach=False),
                             [sequence[:, hp.num_input_frames + step] for step in range(hp.horizon_steps)])

    def generator_losses(self, batch: dict[str, torch.Tensor], rng: torch.Generator) -> LossTerms:
        sequence = self.representation(batch)
        inputs, predictions, targets = self._training_pairs(sequence)
        reconstruction = sum(self._reconstruction(scales, target) for scales, target in zip(predictions, targets))
        terms: LossTerms = {"reconstruction": reconstruction}
        loss = reconstruction
        if self.discriminator is not None:
            logits = self.discriminator(inputs, predictions[0])
            adversarial = sum(generator_non_saturating_loss(scale_logits) for scale_logits in logits)
            terms["adv"] = adversarial
            loss = loss + self.hparams.lambda_adv * adversarial
        terms["loss"] = loss
        return terms

    def discriminator_losses(self, batch: dict[str, torch.Tensor], rng: torch.Generator) -> LossTerms:
        sequence = self.representation(batch)
        inputs = sequence[:, : self.hparams.num_input_frames]
        with torch.no_grad():
            predictions = self._steps(inputs, 1 if self.hparams.mode != "batch" else self.hparams.horizon_steps,
                                      detach=True)[0]
        real = pyramid(sequence[:, self.hparams.num_input_frames], len(predictions))
        discriminator = self.network("discriminator")
        real_logits = discriminator(inputs, real)
        fake_logits = discriminator(inputs, predictions)
        return {"loss": sum(discriminator_real_fake_loss(r, f) for r, f in zip(real_logits, fake_logits))}

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer_class = torch.optim.SGD if hp.optimizer == "sgd" else torch.optim.Adam
        generator_optimizer = optimizer_class(self.generator.parameters(), lr=hp.lr)
        if self.discriminator is None:
            return generator_optimizer
        return [generator_optimizer, optimizer_class(self.discriminator.parameters(), lr=hp.discriminator_lr)]

    # ---- evaluation ---------------------------------------------------------------------------------------

    def _baselines(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        last_segmentation = batch["scores"][:, hp.num_input_frames - 1].float().argmax(dim=1)
        frames = to_unit_range(batch["frames"])
        flow = batch_flow(frames[:, hp.num_input_frames - 2], frames[:, hp.num_input_frames - 1])
        warped = extrapolate(last_segmentation[:, None], flow, steps=hp.horizon_steps, interpolation="nearest")
        return {"copy_last": last_segmentation, "optical_flow": warped[:, 0]}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        predicted = self.segment(self.forecast(batch))
        segmentations = {"model": predicted}
        if "copy_last__gt" in self.iou:
            segmentations |= self._baselines(batch)
        references = {"gt": batch["labels"].long(), "segmenter": batch["segmenter_labels"].long()}
        for predictor, segmentation in segmentations.items():
            for reference, labels in references.items():
                self.iou[f"{predictor}__{reference}"].update(segmentation, labels)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_segmentations(batch, predicted)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """The forecast segmentation of every future step of each sample, as validation segments the last one.

        Returns ``{"name": list[str] (B), "steps": [1, ..., S] (S = horizon_steps), "target_names": list[list[str]]
        (B, S), the frame each step forecasts (see :func:`datamodules.prediction.target_names`), "segmentation": int64
        (B, S, h, w) trainIds 0..18 on the CPU}``.
        """
        steps = self.forecast_steps(batch).unbind(dim=1)
        segmentation = torch.stack([self.segment(step) for step in steps], dim=1)
        return {"name": sample_names(batch), "steps": list(range(1, len(steps) + 1)),
                "target_names": target_names(batch, len(steps)), "segmentation": segmentation.cpu()}

    def on_validation_epoch_end(self) -> None:
        metrics = {}
        for key, metric in self.iou.items():
            predictor, reference = key.split("__")
            values = metric.compute()
            metrics[f"val/{predictor}/miou_{reference}"] = values["miou"]
            metrics[f"val/{predictor}/mo_miou_{reference}"] = values["mo_miou"]
            metric.reset()
        self.log_dict(metrics)

    def _log_segmentations(self, batch: dict[str, torch.Tensor], predicted: torch.Tensor) -> None:
        count = min(self.hparams.log_sequences, predicted.shape[0])
        palette = torch.from_numpy(train_id_colors()).to(predicted.device)
        last_input = batch["scores"][:count, self.hparams.num_input_frames - 1].float().argmax(dim=1)
        rows = [palette[labels[:count].long()].permute(0, 3, 1, 2).float() / 127.5 - 1
                for labels in (last_input, predicted, batch["labels"])]
        grid = image_grid(torch.stack(rows, dim=1).flatten(0, 1), nrow=3)
        log_image(self.trainer, "segmentations/last input|forecast|ground truth", grid,
                  caption=f"step {self.global_step}")
        log_segmentation_masks(self.trainer, "segmentations/target frame", to_unit_range(batch["frames"][0, -1]),
                               {"forecast": predicted[0], "ground truth": batch["labels"][0]}, TRAIN_ID_NAMES)
