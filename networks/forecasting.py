"""One-step forecasters run over sequences: the training windows, recursive unrolling and residual forecasts that
SegForecastAR, JointForecaster and F2FForecaster (and FrameGAN's evaluation) share.

A *one-step forecaster* is any callable mapping a window of past frames (B, T, C, H, W) to its per-scale predictions
of the next frame, coarse to fine (a list of (B, C, H_k, W_k), the last at (H, W)): the S2S networks of
:mod:`networks.segmentation_forecast`, Mathieu et al.'s generator, or one F2F level. The training modes of Luc et al.
(2017) are:

* ``autoregressive``: every one-step window of the sequence, its inputs the real frames, is a training sample;
* ``ar_finetune``: the forecaster unrolled over every step, each prediction fed back as the newest input without
  detaching it, so the later steps' losses reach the weights through the fed-back frames too (backpropagation
  through time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from networks.multiscale_video import pyramid

OneStepForecaster = Callable[[Tensor], list[Tensor]]
TrainingMode = Literal["autoregressive", "ar_finetune"]


def unroll(forecaster: OneStepForecaster, window: Tensor, steps: int, detach: bool) -> list[list[Tensor]]:
    """Apply a one-step forecaster ``steps`` times, each prediction becoming the newest frame of the window.

    ``window`` is (B, T, C, H, W); returns, per step, the forecaster's per-scale predictions. With ``detach`` the fed
    back frames are detached (autoregressive training and inference), without it gradients flow through all the
    steps (fine-tuning with backpropagation through time).
    """
    outputs = []
    for _ in range(steps):
        scales = forecaster(window)
        outputs.append(scales)
        newest = scales[-1].detach() if detach else scales[-1]
        window = torch.cat([window[:, 1:], newest[:, None]], dim=1)
    return outputs


class TrainingPairs(NamedTuple):
    """What a training mode asks of a one-step forecaster: ``predictions[i]`` (per scale) is scored against
    ``targets[i]``; ``inputs`` is the window of the first prediction (a discriminator's condition)."""

    inputs: Tensor
    predictions: list[list[Tensor]]
    targets: list[Tensor]


def training_pairs(forecaster: OneStepForecaster, sequence: Tensor, num_inputs: int, steps: int,
                   mode: TrainingMode) -> TrainingPairs:
    """The (prediction, target) pairs of ``mode`` (see the module docstring) on a sequence (B, num_inputs + steps, ...).

    ``autoregressive``: one pair, the ``steps`` one-step windows stacked on the batch axis (window ``k`` holds frames
    ``k .. k + num_inputs - 1`` and targets frame ``num_inputs + k``; batch index ``k * B + b``), so
    ``inputs`` is (steps * B, num_inputs, ...). ``ar_finetune``: ``steps`` pairs, unrolled from the first window
    without detaching, step ``k`` targeting frame ``num_inputs + k``; ``inputs`` is the first window.
    """
    if mode == "autoregressive":
        windows = torch.cat([sequence[:, step:step + num_inputs] for step in range(steps)])
        targets = torch.cat([sequence[:, num_inputs + step] for step in range(steps)])
        return TrainingPairs(windows, [forecaster(windows)], [targets])
    if mode != "ar_finetune":
        raise ValueError(f"training mode must be 'autoregressive' or 'ar_finetune', got {mode!r}")
    inputs = sequence[:, :num_inputs]
    return TrainingPairs(inputs, unroll(forecaster, inputs, steps, detach=False),
                         [sequence[:, num_inputs + step] for step in range(steps)])


def add_last_frame(changes: list[Tensor], last: Tensor) -> list[Tensor]:
    """A residual forecast: per-scale changes (coarse to fine, the last at the size of ``last``) added to the last
    input frame (B, C, H, W) average-pooled to each scale (:func:`networks.multiscale_video.pyramid`)."""
    return [change + pooled for change, pooled in zip(changes, pyramid(last, len(changes)))]


def zero_(layers: Iterable[nn.Conv2d]) -> None:
    """Zero the weights and biases of a forecaster's output layers, so that its residual forecast starts as an exact
    copy of the last frame (:func:`add_last_frame`): copy-last is where a short training run has to start from."""
    for layer in layers:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
