"""JointForecaster: the loss formula per mode, copy-last start of the residual model, evaluation and tracking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_modules.joint_forecaster import JointForecaster
from representations.distance_map_encoding import encode_frame, expand

CAR_TRAIN_ID, CAR_LABEL_ID = 13, 26


def _batch(count: int = 2, size: tuple[int, int] = (32, 64), frames: int = 7) -> dict[str, torch.Tensor]:
    """Road scenes with one car moving 2 px right per frame; the last frame is the annotated target."""
    height, width = size
    classes = torch.zeros(count, frames, height, width, dtype=torch.uint8)
    instances = torch.full((count, frames, height, width), 7, dtype=torch.int32)
    for sample in range(count):
        for frame in range(frames):
            left = 4 + 2 * frame + 3 * sample
            classes[sample, frame, 10:20, left:left + 12] = CAR_TRAIN_ID
            instances[sample, frame, 10:20, left:left + 12] = CAR_LABEL_ID * 1000 + 1
    values = torch.stack([torch.stack([torch.from_numpy(encode_frame(classes[s, f].numpy(), instances[s, f].numpy()))
                                       for f in range(frames)]) for s in range(count)]).half()
    generator = torch.Generator().manual_seed(0)
    return {"frames": torch.randint(0, 256, (count, frames, 3, height, width), generator=generator,
                                    dtype=torch.uint8),
            "frame_classes": classes, "frame_instances": instances, "frame_values": values,
            "labels": classes[:, -1].clone(), "instances": instances[:, -1].clone(),
            "index": torch.arange(count)}


def _gdl(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    vertical = ((target[..., 1:, :] - target[..., :-1, :]).abs() - (pred[..., 1:, :] - pred[..., :-1, :]).abs()).abs()
    horizontal = ((target[..., 1:] - target[..., :-1]).abs() - (pred[..., 1:] - pred[..., :-1]).abs()).abs()
    return vertical.mean() + horizontal.mean()


def _paper_loss(predictions: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    # mean squared error + GDL against the average-pooled target, summed over scales
    total = torch.tensor(0.0)
    for scale, prediction in enumerate(predictions):
        factor = 2 ** (len(predictions) - 1 - scale)
        scaled = F.avg_pool2d(target, factor) if factor > 1 else target
        total = total + (prediction - scaled).pow(2).mean() + _gdl(prediction, scaled)
    return total


def _maps(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return expand(batch["frame_classes"], batch["frame_values"].float(), 19)


def test_autoregressive_loss_is_l2_plus_gdl_over_every_one_step_window():
    torch.manual_seed(0)
    model = JointForecaster(width_multiplier=0.125, mode="autoregressive", evaluate_baselines=False)
    batch = _batch()
    maps = _maps(batch)
    windows = torch.cat([maps[:, step:step + 4] for step in range(3)])
    targets = torch.cat([maps[:, 4 + step] for step in range(3)])
    torch.testing.assert_close(model.training_loss(batch), _paper_loss(model.network(windows), targets))


def test_ar_finetune_loss_unrolls_with_gradients_through_the_fed_back_frames():
    torch.manual_seed(0)
    model = JointForecaster(width_multiplier=0.125, mode="ar_finetune", evaluate_baselines=False)
    batch = _batch()
    maps = _maps(batch)
    window, expected = maps[:, :4], torch.tensor(0.0)
    for step in range(3):
        predictions = model.network(window)
        expected = expected + _paper_loss(predictions, maps[:, 4 + step])
        window = torch.cat([window[:, 1:], predictions[-1][:, None]], dim=1)
    loss = model.training_loss(batch)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    through_time = [parameter.grad.clone() for parameter in model.network.parameters()]
    model.zero_grad()
    window, detached = maps[:, :4], torch.tensor(0.0)
    for step in range(3):
        predictions = model.network(window)
        detached = detached + _paper_loss(predictions, maps[:, 4 + step])
        window = torch.cat([window[:, 1:], predictions[-1].detach()[:, None]], dim=1)
    detached.backward()
    truncated = [parameter.grad for parameter in model.network.parameters()]
    assert any(not torch.allclose(a, b) for a, b in zip(through_time, truncated))


def test_residual_model_starts_from_copy_last():
    model = JointForecaster(width_multiplier=0.125, residual=True, evaluate_baselines=False)
    batch = _batch()
    torch.testing.assert_close(model.forecast(batch), _maps(batch)[:, 3])


def test_validation_scores_model_and_baselines_and_predict_exposes_tracks():
    torch.manual_seed(0)
    model = JointForecaster(width_multiplier=0.125, residual=True)
    batch = _batch()
    model.validation_step(batch, 1)
    scores = {name: model.instance_ap[name].compute()["ap50"] for name in model.instance_ap}
    semantic = {name: model.semantic_iou[name].compute()["mo_miou"] for name in model.semantic_iou}
    # The car moves 2 px per frame: the residual model at initialisation copies the last input's maps, but its
    # instances are seeded at the extrapolated centroid, so its masks are the copy's masks.
    assert semantic["model"] == pytest.approx(float(semantic["copy_last"]))
    assert float(scores["model"]) == pytest.approx(float(scores["copy_last"]))
    outputs = model.predict_step(batch, 0)
    assert [output["track_ids"].tolist() for output in outputs] == [[26001], [26001]]
    assert outputs[0]["semantic"].shape == (32, 64)


@pytest.mark.parametrize("mode", ["autoregressive", "ar_finetune"])
def test_a_few_steps_reduce_the_loss(mode: str):
    torch.manual_seed(0)
    model = JointForecaster(width_multiplier=0.125, mode=mode, lr=1e-3, evaluate_baselines=False)
    optimizer = model.configure_optimizers()
    batch = _batch()
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = model.training_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert np.isfinite(losses).all()


def test_residual_model_learns_a_constant_motion_that_copy_last_misses():
    # The reason for the default p = 2 (see the module docstring): one batch of a car moving 2 px per frame.
    torch.manual_seed(0)
    model = JointForecaster(width_multiplier=0.125, residual=True, evaluate_baselines=False)
    optimizer = model.configure_optimizers()
    batch = _batch(count=2)
    labels = batch["labels"].long()
    copy_accuracy = (_maps(batch)[:, 3].argmax(dim=1) == labels).float().mean()
    for _ in range(60):
        optimizer.zero_grad()
        model.training_loss(batch).backward()
        optimizer.step()
    accuracy = (model.forecast(batch).argmax(dim=1) == labels).float().mean()
    assert copy_accuracy < 0.95 and accuracy > 0.98

