"""One-step forecasters over sequences: unrolling, the training modes' windows, residual forecasts."""

from __future__ import annotations

import pytest
import torch

from networks.forecasting import add_last_frame, training_pairs, unroll, zero_
from networks.multiscale_video import pyramid
from networks.segmentation_forecast import make_segmentation_forecaster


def test_unroll_feeds_predictions_back_with_or_without_gradients():
    torch.manual_seed(0)
    network = make_segmentation_forecaster("dilated", 3, 3, 2, 0.0625)
    window = torch.randn(1, 2, 3, 8, 8, requires_grad=True)
    steps = unroll(network, window, steps=3, detach=False)
    expected_second = network(torch.stack([window[:, 1], steps[0][-1]], dim=1))[-1]
    torch.testing.assert_close(steps[1][-1], expected_second)
    steps[-1][-1].sum().backward()
    assert window.grad[:, 0].abs().sum() > 0  # reaches the oldest frame only through the fed-back predictions
    fresh = window.detach().requires_grad_()
    unroll(network, fresh, steps=3, detach=True)[-1][-1].sum().backward()
    assert fresh.grad is None or not fresh.grad.any()  # the third step sees only the two detached predictions


def _frame_index_forecaster(window: torch.Tensor) -> list[torch.Tensor]:
    """A one-step 'forecaster' whose prediction is its newest input plus 100, at two scales."""
    newest = window[:, -1] + 100
    return pyramid(newest, 2)


def test_autoregressive_pairs_stack_every_one_step_window_step_major():
    sequence = torch.arange(2 * 7, dtype=torch.float32).reshape(2, 7, 1, 1, 1).expand(2, 7, 1, 2, 2).clone()
    pairs = training_pairs(_frame_index_forecaster, sequence, num_inputs=4, steps=3, mode="autoregressive")
    assert pairs.inputs.shape == (6, 4, 1, 2, 2) and len(pairs.predictions) == len(pairs.targets) == 1
    # window k of sample b sits at batch index k * 2 + b, and targets frame 4 + k of that sample
    for step in range(3):
        for sample in range(2):
            torch.testing.assert_close(pairs.inputs[step * 2 + sample], sequence[sample, step:step + 4])
            torch.testing.assert_close(pairs.targets[0][step * 2 + sample], sequence[sample, 4 + step])
            torch.testing.assert_close(pairs.predictions[0][-1][step * 2 + sample], sequence[sample, 3 + step] + 100)


def test_ar_finetune_pairs_feed_predictions_back_with_their_gradients():
    sequence = torch.randn(2, 7, 1, 2, 2, requires_grad=True)
    pairs = training_pairs(_frame_index_forecaster, sequence, num_inputs=4, steps=3, mode="ar_finetune")
    torch.testing.assert_close(pairs.inputs, sequence[:, :4])
    assert len(pairs.predictions) == len(pairs.targets) == 3
    for step in range(3):
        torch.testing.assert_close(pairs.targets[step], sequence[:, 4 + step])
        # each step adds 100 to the previous prediction: the last input frame plus 100 per step
        torch.testing.assert_close(pairs.predictions[step][-1], sequence[:, 3] + 100 * (step + 1))
    pairs.predictions[-1][-1].sum().backward()
    assert sequence.grad[:, 3].abs().sum() > 0  # the third step reaches the inputs through two fed-back frames
    with pytest.raises(ValueError, match="training mode"):
        training_pairs(_frame_index_forecaster, sequence, 4, 3, mode="batch")


def test_zeroed_residual_forecast_is_the_pooled_last_frame():
    torch.manual_seed(0)
    network = make_segmentation_forecaster("multiscale", 19, 19, 4, 0.125)
    zero_(network.output_layers())
    frames = torch.randn(2, 4, 19, 16, 32)
    changes = network(frames)
    assert all(not change.any() for change in changes)
    for forecast, pooled in zip(add_last_frame(changes, frames[:, -1]), pyramid(frames[:, -1], 2)):
        torch.testing.assert_close(forecast, pooled, rtol=0, atol=0)
