"""Copy-last baseline: the future equals the last observed frame (or label map, or mask)."""

from __future__ import annotations

import torch


def copy_last(inputs: torch.Tensor) -> torch.Tensor:
    """The last input step of a batch of sequences (B, T, ...), e.g. (B, T, C, H, W) -> (B, C, H, W).

    Label maps (B, T, H, W) give (B, H, W). Returns a copy (not a view of ``inputs``) with the same dtype and device.
    """
    if inputs.dim() < 3 or inputs.shape[1] < 1:
        raise ValueError(f"expected inputs (B, T, ...) with T >= 1, got {tuple(inputs.shape)}")
    return inputs[:, -1].clone()


def copy_last_forecast(inputs: torch.Tensor, steps: int) -> torch.Tensor:
    """The last input step repeated ``steps`` times: (B, T, ...) -> (B, steps, ...).

    Same output layout as :func:`baselines.optical_flow.flow_forecast`.
    """
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    last = copy_last(inputs)
    return last.unsqueeze(1).repeat(1, steps, *([1] * (last.dim() - 1)))
