"""FrameGAN: multiscale adversarial next-frame prediction (Mathieu, Couprie, LeCun, ICLR 2016).

The generator predicts the next frame from 4 past frames coarse to fine (4 scales for 32x32 training patches,
each scale adding a residual to the upsampled coarser prediction); every loss is applied at every scale:

``L_G = sum_k [ l_lp L_p(P_k, Y_k) + l_gdl L_gdl(P_k, Y_k) + l_adv L_adv^G(D_k(X_k, P_k)) ]``

and the multiscale discriminator sees the input frames with the real or predicted frame. With
``lambda_adv = 0`` the model has no discriminator (the paper's l1, l2 and GDL rows); with ``num_scales = 1`` it is
the single-scale ablation. Optimisers as in the paper: SGD, the generator's rate decayed linearly from 0.04 to
0.005 over training, the discriminator's 0.02 (Adam as an option).

Evaluation follows the paper's protocol on full frames: predict the 1st future frame from 4 inputs, then the 2nd
recursively from the 1st, and score PSNR, SSIM and sharpness difference over the full frame and over the moving
areas (optical-flow mask), beside the copy-last-frame and optical-flow baselines computed on the same clips.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from baselines.copy_last import copy_last_forecast
from baselines.optical_flow import flow_forecast
from datamodules.augment import to_unit_range
from datamodules.prediction import sample_names
from lightning_modules.adversarial import AdversarialModule, CompileMode, LossTerms
from lightning_modules.guard import NonFinitePolicy
from lightning_modules.renamed_hyperparameters import adopt_renamed
from lightning_modules.visuals import image_grid, log_image, log_video
from losses import discriminator_real_fake_loss, generator_non_saturating_loss, gradient_difference_loss, lp_loss
from metrics.video import FramePSNR, FrameSSIM, SharpnessDifference, moving_area_mask
from networks.forecasting import unroll
from networks.multiscale_video import (
    PAPER_DISCRIMINATOR_FEATURE_MAPS,
    PAPER_DISCRIMINATOR_HIDDEN_UNITS,
    PAPER_GENERATOR_FEATURE_MAPS,
    MultiscaleFrameDiscriminator,
    MultiscaleFrameGenerator,
    pyramid,
)

PREDICTORS = ("model", "copy_last", "optical_flow")


def scaled_widths(widths: tuple[tuple[int, ...], ...], multiplier: float) -> tuple[tuple[int, ...], ...]:
    """The paper's per-scale widths times ``multiplier`` (at least 4 channels or units each)."""
    return tuple(tuple(max(4, round(width * multiplier)) for width in scale) for scale in widths)


class FrameGAN(AdversarialModule):
    """Multiscale next-frame predictor with GDL and adversarial losses (see the module docstring).

    Args:
        num_input_frames: past frames stacked on channels (4 in the paper).
        num_scales: generator/discriminator scales (4; 1 is the single-scale ablation).
        patch_size: training patch size (32); the discriminator's fully connected sizes depend on it.
        width_multiplier: scales every width of both networks (1.0 = the paper's; the CPU demo uses less).
        lambda_adv, lambda_lp, lambda_gdl: loss weights (paper's Adv+GDL: 0.05, 1, 1); ``lambda_adv = 0``
            trains without a discriminator.
        reconstruction_p: the exponent p of the L_p loss (1 or 2).
        lp: deprecated name of ``reconstruction_p``, read from earlier checkpoints and configs.
        gdl_alpha: exponent of the gradient difference loss.
        optimizer: ``"sgd"`` (the paper's) or ``"adam"``.
        generator_lr, generator_lr_final: the generator's rate, decayed linearly over ``trainer.max_steps``.
        discriminator_lr: the discriminator's rate.
        eval_targets: future frames predicted recursively at evaluation (2 in the paper).
        masking: ``"restrict"`` (metrics over moving pixels only) or ``"official"`` (the released code's
            convention: static pixels set to -1 in both images, frames with PSNR >= 50 skipped).
        motion_threshold: optical-flow magnitude (pixels) above which a pixel counts as moving.
        evaluate_baselines: also score copy-last and optical-flow extrapolation on the validation clips.
        log_clips: number of fixed validation clips logged as input / prediction / target strips.
        channels_last: keep both networks and their inputs in NHWC layout (faster convolutions on tensor cores).
        compile_mode: ``torch.compile`` mode of the training forwards, e.g. ``"reduce-overhead"`` (CUDA graphs) for
            the launch-bound paper setting; see :mod:`lightning_modules.adversarial`. ``None`` trains eagerly.
        cuda_graph: run the whole training step as one CUDA graph (see :mod:`lightning_modules.adversarial`).
    """

    def __init__(
        self,
        num_input_frames: int = 4,
        num_scales: int = 4,
        patch_size: int = 32,
        width_multiplier: float = 1.0,
        lambda_adv: float = 0.05,
        lambda_lp: float = 1.0,
        lambda_gdl: float = 1.0,
        reconstruction_p: float = 1.0,
        gdl_alpha: float = 1.0,
        optimizer: Literal["sgd", "adam"] = "sgd",
        generator_lr: float = 0.04,
        generator_lr_final: float = 0.005,
        discriminator_lr: float = 0.02,
        eval_targets: int = 2,
        masking: Literal["restrict", "official"] = "restrict",
        motion_threshold: float = 0.5,
        evaluate_baselines: bool = True,
        log_clips: int = 4,
        channels_last: bool = False,
        n_critic: int = 1,
        gradient_clip_val: float | None = None,
        nonfinite: NonFinitePolicy = "stop",
        seed: int = 0,
        compile_mode: CompileMode | None = None,
        cuda_graph: bool = False,
        lp: float | None = None,
    ) -> None:
        super().__init__(n_critic=n_critic, gradient_clip_val=gradient_clip_val, nonfinite=nonfinite, seed=seed,
                         compile_mode=compile_mode, cuda_graph=cuda_graph)
        self.save_hyperparameters(ignore=["lp"])
        adopt_renamed(self, "lp", "reconstruction_p", lp)
        self.generator = MultiscaleFrameGenerator(
            num_input_frames=num_input_frames, num_scales=num_scales,
            feature_maps=scaled_widths(PAPER_GENERATOR_FEATURE_MAPS, width_multiplier))
        self.discriminator = None
        if lambda_adv > 0:
            self.discriminator = MultiscaleFrameDiscriminator(
                num_input_frames=num_input_frames, patch_size=patch_size, num_scales=num_scales,
                feature_maps=scaled_widths(PAPER_DISCRIMINATOR_FEATURE_MAPS, width_multiplier),
                hidden_units=scaled_widths(PAPER_DISCRIMINATOR_HIDDEN_UNITS, width_multiplier))
        if channels_last:
            for network in (self.generator, self.discriminator):
                if network is not None:
                    network.to(memory_format=torch.channels_last)
        self.frame_metrics = torch.nn.ModuleDict()
        predictors = PREDICTORS if evaluate_baselines else PREDICTORS[:1]
        for predictor in predictors:
            for step in range(1, eval_targets + 1):
                for region in ("full", "moving"):
                    region_masking = masking if region == "moving" else "restrict"
                    self.frame_metrics[f"{predictor}__{region}_{step}"] = torch.nn.ModuleDict({
                        "psnr": FramePSNR(masking=region_masking),
                        "ssim": FrameSSIM(masking=region_masking),
                        "sharpness": SharpnessDifference(masking=region_masking),
                    })

    # ---- training -----------------------------------------------------------------------------------------

    def _split(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        frames = to_unit_range(batch["frames"])
        return frames[:, : self.hparams.num_input_frames], frames[:, self.hparams.num_input_frames]

    def discriminator_losses(self, batch: dict[str, torch.Tensor], rng: torch.Generator) -> LossTerms:
        inputs, target = self._split(batch)
        with torch.no_grad():
            predictions = self.frozen_network("generator")(inputs)
        inputs_pyramid = pyramid(inputs, self.hparams.num_scales)
        discriminator = self.network("discriminator")
        real_logits = discriminator(inputs_pyramid, pyramid(target, self.hparams.num_scales))
        fake_logits = discriminator(inputs_pyramid, predictions)
        loss = sum(discriminator_real_fake_loss(real, fake) for real, fake in zip(real_logits, fake_logits))
        return {"loss": loss}

    def generator_losses(self, batch: dict[str, torch.Tensor], rng: torch.Generator) -> LossTerms:
        hp = self.hparams
        inputs, target = self._split(batch)
        predictions = self.network("generator")(inputs)
        targets = pyramid(target, hp.num_scales)
        lp = sum(lp_loss(prediction, scaled, hp.reconstruction_p) for prediction, scaled in zip(predictions, targets))
        terms: LossTerms = {"lp": lp}
        loss = hp.lambda_lp * lp
        if hp.lambda_gdl > 0:
            gdl = sum(gradient_difference_loss(prediction, scaled, hp.gdl_alpha)
                      for prediction, scaled in zip(predictions, targets))
            terms["gdl"] = gdl
            loss = loss + hp.lambda_gdl * gdl
        if self.discriminator is not None:
            logits = self.frozen_network("discriminator")(pyramid(inputs, hp.num_scales), predictions)
            adversarial = sum(generator_non_saturating_loss(scale_logits) for scale_logits in logits)
            terms["adv"] = adversarial
            loss = loss + hp.lambda_adv * adversarial
        terms["loss"] = loss
        return terms

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        if hp.optimizer == "sgd":
            generator_optimizer = torch.optim.SGD(self.generator.parameters(), lr=hp.generator_lr)
        else:
            generator_optimizer = torch.optim.Adam(self.generator.parameters(), lr=hp.generator_lr)
        total = self.total_training_batches()
        final_ratio = hp.generator_lr_final / hp.generator_lr

        def decay(step: int) -> float:
            return 1.0 + (final_ratio - 1.0) * min(step / total, 1.0)

        schedule = {"scheduler": torch.optim.lr_scheduler.LambdaLR(generator_optimizer, decay), "interval": "step"}
        if self.discriminator is None:
            return {"optimizer": generator_optimizer, "lr_scheduler": schedule}
        optimizer_class = torch.optim.SGD if hp.optimizer == "sgd" else torch.optim.Adam
        discriminator_optimizer = optimizer_class(self.discriminator.parameters(), lr=hp.discriminator_lr)
        return [generator_optimizer, discriminator_optimizer], [schedule]

    # ---- evaluation ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def forecast(self, inputs: torch.Tensor, steps: int) -> torch.Tensor:
        """Predict ``steps`` future frames recursively (each prediction becomes the newest input)."""
        return torch.stack([scales[-1] for scales in unroll(self.generator, inputs, steps, detach=True)], dim=1)

    def _predictions(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        steps = self.hparams.eval_targets
        forecasts = {"model": self.forecast(inputs, steps)}
        if "copy_last__full_1" in self.frame_metrics:
            forecasts["copy_last"] = copy_last_forecast(inputs, steps)
            forecasts["optical_flow"] = flow_forecast(inputs, steps).to(inputs.device)
        return forecasts

    def _evaluation_clip(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The input frames and the real future frames of a full-frame clip, in [-1, 1]."""
        frames = to_unit_range(batch["frames"])
        return frames[:, : self.hparams.num_input_frames], frames[:, self.hparams.num_input_frames:]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        hp = self.hparams
        inputs, targets = self._evaluation_clip(batch)
        previous = torch.cat([inputs[:, -1:], targets[:, :-1]], dim=1)
        masks = [moving_area_mask(previous[:, step], targets[:, step], hp.motion_threshold).to(inputs.device)
                 for step in range(hp.eval_targets)]
        forecasts = self._predictions(inputs)
        for predictor, predicted in forecasts.items():
            for step in range(hp.eval_targets):
                for region, mask in (("full", None), ("moving", masks[step])):
                    for metric in self.frame_metrics[f"{predictor}__{region}_{step + 1}"].values():
                        metric.update(predicted[:, step], targets[:, step], mask)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_strips(inputs, forecasts["model"], targets)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """The next ``eval_targets`` frames of each clip, predicted recursively from its first ``num_input_frames``
        frames as in validation (the batch may hold fewer future frames, or none).

        Returns ``{"name": list[str] (B), "inputs": float32 (B, num_input_frames, 3, H, W), "predicted": float32
        (B, eval_targets, 3, H, W), "targets": float32 (B, K, 3, H, W), the K <= eval_targets real frames that follow
        the inputs in the batch}``, all in [-1, 1] on the CPU.
        """
        inputs, targets = self._evaluation_clip(batch)
        predicted = self.forecast(inputs, self.hparams.eval_targets)
        return {"name": sample_names(batch), "inputs": inputs.cpu(), "predicted": predicted.cpu(),
                "targets": targets[:, :self.hparams.eval_targets].cpu()}

    def on_validation_epoch_end(self) -> None:
        metrics = {}
        for key, group in self.frame_metrics.items():
            predictor, where = key.split("__")
            for name, metric in group.items():
                metrics[f"val/{predictor}/{name}_{where}"] = metric.compute()
                metric.reset()
        self.log_dict(metrics)

    def _log_strips(self, inputs: torch.Tensor, predicted: torch.Tensor, targets: torch.Tensor) -> None:
        count = min(self.hparams.log_clips, inputs.shape[0])
        rows = [torch.cat([inputs[i], predicted[i], targets[i]]) for i in range(count)]
        grid = image_grid(torch.cat(rows), nrow=inputs.shape[1] + 2 * predicted.shape[1])
        log_image(self.trainer, "predictions/inputs|predicted|target", grid, caption=f"step {self.global_step}")
        log_video(self.trainer, "predictions/sequence", torch.cat([inputs[0], predicted[0]]))
