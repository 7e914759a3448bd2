"""SegForecastAR: the three training modes, the paper's loss, recursive evaluation and the baselines."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lightning_modules.seg_forecast import SegForecastAR
from metrics.segmentation import SegmentationIoU


def _batch(count: int = 2, size: tuple[int, int] = (32, 64), frames: int = 7) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    height, width = size
    return {
        "frames": torch.randint(0, 256, (count, frames, 3, height, width), generator=generator, dtype=torch.uint8),
        "scores": (torch.randn(count, frames, 19, height, width, generator=generator) * 5).half(),
        "labels": torch.randint(0, 19, (count, height, width), generator=generator, dtype=torch.uint8),
        "segmenter_labels": torch.randint(0, 19, (count, height, width), generator=generator, dtype=torch.uint8),
    }


def _gdl(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    vertical = ((target[..., 1:, :] - target[..., :-1, :]).abs() - (pred[..., 1:, :] - pred[..., :-1, :]).abs()).abs()
    horizontal = ((target[..., 1:] - target[..., :-1]).abs() - (pred[..., 1:] - pred[..., :-1]).abs()).abs()
    return vertical.mean() + horizontal.mean()


def _scale_loss(predictions: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    # sum over scales of l1 + GDL against the average-pooled target
    total = torch.tensor(0.0)
    for scale, prediction in enumerate(predictions):
        factor = 2 ** (len(predictions) - 1 - scale)
        scaled = F.avg_pool2d(target, factor) if factor > 1 else target
        total = total + (prediction - scaled).abs().mean() + _gdl(prediction, scaled)
    return total


def test_ar_finetune_backpropagates_through_time():
    torch.manual_seed(0)
    model = SegForecastAR(mode="ar_finetune", width_multiplier=1 / 8, evaluate_baselines=False)
    batch = _batch()
    terms = model.generator_losses(batch, torch.Generator())
    sequence = batch["scores"].float() / 10.0
    window, expected = sequence[:, :4], torch.tensor(0.0)
    for step in range(3):
        predictions = model.generator(window)
        expected = expected + _scale_loss(predictions, sequence[:, 4 + step])
        window = torch.cat([window[:, 1:], predictions[-1][:, None]], dim=1)
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    with_bptt = [parameter.grad.clone() for parameter in model.generator.parameters()]
    model.zero_grad()
    window, detached_loss = sequence[:, :4], torch.tensor(0.0)
    for step in range(3):
        predictions = model.generator(window)
        detached_loss = detached_loss + _scale_loss(predictions, sequence[:, 4 + step])
        window = torch.cat([window[:, 1:], predictions[-1].detach()[:, None]], dim=1)
    detached_loss.backward()
    # predictions are not detached: the later steps' losses reach the weights through the fed-back frames too
    assert any(not torch.allclose(a, p.grad) for a, p in zip(with_bptt, model.generator.parameters()))


def test_autoregressive_trains_on_every_one_step_window():
    torch.manual_seed(0)
    model = SegForecastAR(mode="autoregressive", width_multiplier=1 / 8, evaluate_baselines=False)
    batch = _batch()
    terms = model.generator_losses(batch, torch.Generator())
    sequence = batch["scores"].float() / 10.0
    windows = torch.cat([sequence[:, step:step + 4] for step in range(3)])
    targets = torch.cat([sequence[:, 4 + step] for step in range(3)])
    torch.testing.assert_close(terms["loss"], _scale_loss(model.generator(windows), targets))


def test_batch_mode_predicts_all_steps_at_once():
    torch.manual_seed(0)
    model = SegForecastAR(mode="batch", width_multiplier=1 / 8, evaluate_baselines=False)
    batch = _batch()
    sequence = batch["scores"].float() / 10.0
    predictions = model.generator(sequence[:, :4])
    assert predictions[-1].shape[1] == 3 * 19
    expected = sum(_scale_loss([scale[:, 19 * step:19 * (step + 1)] for scale in predictions], sequence[:, 4 + step])
                   for step in range(3))
    torch.testing.assert_close(model.generator_losses(batch, torch.Generator())["loss"], expected)


def test_forecast_is_recursive_at_evaluation():
    torch.manual_seed(0)
    model = SegForecastAR(mode="autoregressive", width_multiplier=1 / 8, evaluate_baselines=False)
    batch = _batch()
    window = batch["scores"].float()[:, :4] / 10.0
    for _ in range(3):
        newest = model.generator.predict(window)
        window = torch.cat([window[:, 1:], newest[:, None]], dim=1)
    torch.testing.assert_close(model.forecast(batch), newest)


def test_x2x_needs_a_segmenter():
    with pytest.raises(ValueError, match="segmenter_weights"):
        SegForecastAR(modality="X2X", width_multiplier=1 / 8)


@pytest.mark.parametrize(("mode", "lambda_adv", "modality"), [("ar_finetune", 0.0, "S2S"), ("batch", 0.0, "S2S"),
                                                               ("autoregressive", 0.05, "XS2XS")])
def test_fit_and_validate_log_both_references_and_baselines(mode: str, lambda_adv: float, modality: str, tmp_path):
    class Sequences(L.LightningDataModule):
        def train_dataloader(self):
            return DataLoader([_batch(size=(64, 64)) for _ in range(2)], batch_size=None)

        def val_dataloader(self):
            return DataLoader([_batch()], batch_size=None)

    model = SegForecastAR(modality=modality, mode=mode, lambda_adv=lambda_adv, width_multiplier=1 / 8, log_sequences=1)
    trainer = L.Trainer(accelerator="cpu", max_steps=2 * model.updates_per_batch, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        num_sanity_val_steps=0)
    trainer.fit(model, datamodule=Sequences())
    metrics = trainer.validate(model, datamodule=Sequences(), verbose=False)[0]
    for predictor in ("model", "copy_last", "optical_flow"):
        for name in ("miou_gt", "mo_miou_gt", "miou_segmenter", "mo_miou_segmenter"):
            assert f"val/{predictor}/{name}" in metrics
    # what the batch implies: the last input's segmentation copied, and the model's forecast of the target frame
    batch = _batch()
    segmentations = {"copy_last": batch["scores"][:, 3].float().argmax(dim=1),
                     "model": model.segment(model.forecast(batch))}
    for predictor, segmentation in segmentations.items():
        for reference, labels in (("gt", batch["labels"]), ("segmenter", batch["segmenter_labels"])):
            expected = SegmentationIoU()(segmentation, labels.long())
            for name in ("miou", "mo_miou"):
                assert metrics[f"val/{predictor}/{name}_{reference}"] == pytest.approx(float(expected[name]), abs=1e-6)
    assert list((tmp_path / "images").rglob("*.png"))


def test_residual_s2s_starts_from_copy_last_and_needs_a_one_step_mode():
    model = SegForecastAR(mode="autoregressive", residual=True, width_multiplier=1 / 8, evaluate_baselines=False)
    batch = _batch()
    torch.testing.assert_close(model.forecast(batch), batch["scores"][:, 3].float() / 10.0)
    with pytest.raises(ValueError, match="one-step mode"):
        SegForecastAR(mode="batch", residual=True, width_multiplier=1 / 8)


def test_l2_reconstruction_option():
    torch.manual_seed(0)
    model = SegForecastAR(mode="autoregressive", reconstruction_p=2.0, width_multiplier=1 / 8, evaluate_baselines=False)
    batch = _batch()
    sequence = batch["scores"].float() / 10.0
    windows = torch.cat([sequence[:, step:step + 4] for step in range(3)])
    targets = torch.cat([sequence[:, 4 + step] for step in range(3)])
    expected = torch.tensor(0.0)
    for scale, prediction in enumerate(model.generator(windows)):
        factor = 2 ** (1 - scale)
        scaled = F.avg_pool2d(targets, factor) if factor > 1 else targets
        expected = expected + (prediction - scaled).pow(2).mean() + _gdl(prediction, scaled)
    torch.testing.assert_close(model.generator_losses(batch, torch.Generator())["loss"], expected)
