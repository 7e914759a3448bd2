"""FrameGAN's objective against the paper's multiscale formula, its variants and its evaluation protocol."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lightning_modules.frame_gan import FrameGAN


def _clips(count: int = 4, size: int = 32, frames: int = 5) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"frames": torch.randint(0, 256, (count, frames, 3, size, size), generator=generator, dtype=torch.uint8)}


def _gdl(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # | |Y_ij - Y_(i-1)j| - |P_ij - P_(i-1)j| | and the same along j, each averaged over its valid positions
    vertical = ((target[..., 1:, :] - target[..., :-1, :]).abs() - (pred[..., 1:, :] - pred[..., :-1, :]).abs()).abs()
    horizontal = ((target[..., 1:] - target[..., :-1]).abs() - (pred[..., 1:] - pred[..., :-1]).abs()).abs()
    return vertical.mean() + horizontal.mean()


def test_generator_objective_sums_all_terms_over_scales():
    torch.manual_seed(0)
    model = FrameGAN(width_multiplier=1 / 16, lambda_adv=0.05, lambda_lp=1.0, reconstruction_p=1, lambda_gdl=1.0,
                     evaluate_baselines=False)
    batch = _clips()
    terms = model.generator_losses(batch, torch.Generator())
    frames = batch["frames"].float() / 127.5 - 1
    inputs, target = frames[:, :4], frames[:, 4]
    predictions = model.generator(inputs)
    # L_G = sum_k [ l_lp |P_k - Y_k|_1 + l_gdl GDL(P_k, Y_k) + l_adv (-log sigmoid D_k(X_k, P_k)) ], Y_k avg-pooled
    expected = torch.tensor(0.0)
    for scale, prediction in enumerate(predictions):
        factor = 2 ** (len(predictions) - 1 - scale)
        scaled_target = F.avg_pool2d(target, factor) if factor > 1 else target
        expected = expected + (prediction - scaled_target).abs().mean() + _gdl(prediction, scaled_target)
    logits = model.discriminator(inputs, predictions)
    expected = expected + 0.05 * sum(-F.logsigmoid(scale_logits).mean() for scale_logits in logits)
    torch.testing.assert_close(terms["loss"], expected)


def test_without_adversarial_term_there_is_no_discriminator():
    model = FrameGAN(width_multiplier=1 / 16, lambda_adv=0.0, evaluate_baselines=False)
    assert model.discriminator is None
    assert model.trained_networks == ("generator",)


def test_single_scale_variant_predicts_one_scale():
    model = FrameGAN(width_multiplier=1 / 16, num_scales=1, lambda_adv=0.0, evaluate_baselines=False)
    frames = _clips()["frames"].float() / 127.5 - 1
    assert len(model.generator(frames[:, :4])) == 1


def test_forecast_is_recursive():
    torch.manual_seed(0)
    model = FrameGAN(width_multiplier=1 / 16, lambda_adv=0.0, evaluate_baselines=False)
    inputs = _clips()["frames"][:, :4].float() / 127.5 - 1
    forecast = model.forecast(inputs, steps=2)
    first = model.generator.predict(inputs)
    second = model.generator.predict(torch.cat([inputs[:, 1:], first[:, None]], dim=1))
    torch.testing.assert_close(forecast[:, 0], first)
    torch.testing.assert_close(forecast[:, 1], second)


@pytest.mark.parametrize("lambda_adv", [0.0, 0.05])
def test_training_and_evaluation_steps_run(lambda_adv: float, tmp_path):
    class Clips(L.LightningDataModule):
        def train_dataloader(self):
            return DataLoader([_clips() for _ in range(3)], batch_size=None)

        def val_dataloader(self):
            return DataLoader([_clips(count=2, size=32, frames=6)], batch_size=None)

    model = FrameGAN(width_multiplier=1 / 16, lambda_adv=lambda_adv, log_clips=1)
    trainer = L.Trainer(accelerator="cpu", max_steps=3 * model.updates_per_batch, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        num_sanity_val_steps=0, val_check_interval=3)
    trainer.fit(model, datamodule=Clips())
    metrics = trainer.validate(model, datamodule=Clips(), verbose=False)[0]
    for predictor in ("model", "copy_last", "optical_flow"):
        for name in ("psnr_full_1", "ssim_moving_2", "sharpness_full_2"):
            assert f"val/{predictor}/{name}" in metrics
    # full-frame PSNR of what the clip implies: the last input copied, and the model's recursive forecast
    frames = _clips(count=2, size=32, frames=6)["frames"]
    unit = frames.double() / 255
    forecast = (model.forecast(frames[:, :4].float() / 127.5 - 1, steps=2).double() + 1) / 2
    for step in (1, 2):
        target = unit[:, 3 + step]
        for predictor, predicted in (("copy_last", unit[:, 3]), ("model", forecast[:, step - 1])):
            mse = ((predicted - target) ** 2).mean(dim=(1, 2, 3))
            expected = (10 * torch.log10(1 / mse)).mean().item()
            assert metrics[f"val/{predictor}/psnr_full_{step}"] == pytest.approx(expected, abs=1e-3)
    assert list((tmp_path / "videos").rglob("*.mp4"))
    generator_lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert generator_lr == pytest.approx(0.005, rel=1e-6)
