"""Optical-flow extrapolation baseline: estimate the last motion with OpenCV and continue it at constant velocity.

Flow convention (used throughout): the *backward* flow ``f`` of a pair (previous, current) lives on the pixel grid of
``current`` and points to where each pixel of ``current`` was in ``previous``:
``current[y, x] ~ previous[y + f_y(y, x), x + f_x(y, x)]``. Channel 0 is the horizontal displacement ``f_x`` (columns)
and channel 1 the vertical one ``f_y`` (rows), in pixels, as in OpenCV. An object moving by velocity ``v`` pixels per
frame has ``f = -v``.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

FlowMethod = Literal["farneback", "dis"]
Interpolation = Literal["linear", "nearest"]

FARNEBACK_PARAMETERS = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}
"""Arguments of ``cv2.calcOpticalFlowFarneback`` (OpenCV's documented example values)."""

BOOLEAN_THRESHOLD = 0.5
"""Boolean masks warped with linear interpolation are true where the interpolated value is at least this."""


def _grey_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8 or not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3)):
        raise ValueError(f"expected a uint8 frame (H, W) or RGB (H, W, 3), got {frame.dtype} {frame.shape}")
    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def flow_between(previous: np.ndarray, current: np.ndarray, method: FlowMethod = "farneback") -> np.ndarray:
    """Backward flow (H, W, 2) float32 from ``current`` to ``previous`` (see the module docstring for the convention).

    Frames are uint8 grey (H, W) or RGB (H, W, 3); RGB is turned to grey with OpenCV's BT.601 luma. ``"farneback"``
    is ``cv2.calcOpticalFlowFarneback`` with :data:`FARNEBACK_PARAMETERS`, ``"dis"`` is OpenCV's dense inverse search
    with its ``MEDIUM`` preset. Both are run from ``current`` to ``previous`` so that the flow lives on ``current``.
    """
    previous_grey, current_grey = _grey_uint8(previous), _grey_uint8(current)
    if previous_grey.shape != current_grey.shape:
        raise ValueError(f"frames differ in size: {previous_grey.shape} and {current_grey.shape}")
    if method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(current_grey, previous_grey, None, **FARNEBACK_PARAMETERS)
    elif method == "dis":
        flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(current_grey, previous_grey, None)
    else:
        raise ValueError(f"unknown flow method {method!r}; expected 'farneback' or 'dis'")
    return flow.astype(np.float32, copy=False)


def batch_flow(previous: torch.Tensor, current: torch.Tensor, method: FlowMethod = "farneback") -> torch.Tensor:
    """Backward flows (B, H, W, 2) float32 between batches of frames (B, 3 or 1, H, W) in [-1, 1].

    Each frame is mapped to uint8 by ``round(255 (clamp(x, -1, 1) + 1) / 2)`` and passed to :func:`flow_between`.
    The flows are on the device of ``current``.
    """
    if previous.shape != current.shape or current.dim() != 4 or current.shape[1] not in (1, 3):
        raise ValueError(
            f"expected two batches of frames (B, 3 or 1, H, W), got {tuple(previous.shape)} and {tuple(current.shape)}"
        )
    previous_uint8, current_uint8 = (_to_uint8_images(frames) for frames in (previous, current))
    flows = [flow_between(before, after, method) for before, after in zip(previous_uint8, current_uint8)]
    return torch.from_numpy(np.stack(flows)).to(current.device)


def _to_uint8_images(frames: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, 3) or (B, H, W) uint8."""
    unit = (frames.detach().to(torch.float32).clamp(-1, 1) + 1) / 2
    images = (unit * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return images[..., 0] if images.shape[-1] == 1 else images


def extrapolate(
    last_value: torch.Tensor,
    flow: torch.Tensor,
    steps: int = 1,
    interpolation: Interpolation = "linear",
) -> torch.Tensor:
    """Warp ``last_value`` ``steps`` frames ahead assuming the constant velocity given by a backward ``flow``.

    With ``f`` the backward flow (B, H, W, 2) of the last observed pair (velocity ``v = -f``), the forecast at pixel
    ``x`` is ``last_value`` sampled at ``x - steps v = x + steps f(x)``. The velocity is read at ``x`` on the last
    frame's grid (a backward warp), which is exact inside moving regions and blurs their leading edges by the
    displacement. Samples outside the image take the nearest border value (replicate padding).

    ``last_value`` is (B, C, H, W) (RGB frames, per-class score maps) or (B, H, W) (label maps, instance masks), with
    H, W >= 2. The result has its shape and dtype:

    - floating point: ``"linear"`` (bilinear) or ``"nearest"`` interpolation;
    - integer (label maps): ``"nearest"`` only, so every output value is one of the input values;
    - bool (masks): ``"nearest"``, or ``"linear"`` followed by ``value >= 0.5`` (:data:`BOOLEAN_THRESHOLD`).
    """
    if last_value.dim() not in (3, 4):
        raise ValueError(f"expected last_value (B, C, H, W) or (B, H, W), got {tuple(last_value.shape)}")
    batch, height, width = last_value.shape[0], last_value.shape[-2], last_value.shape[-1]
    if flow.shape != (batch, height, width, 2):
        raise ValueError(f"expected flow of shape {(batch, height, width, 2)}, got {tuple(flow.shape)}")
    if height < 2 or width < 2:
        raise ValueError(f"expected H, W >= 2, got {(height, width)}")
    if interpolation not in ("linear", "nearest"):
        raise ValueError(f"unknown interpolation {interpolation!r}; expected 'linear' or 'nearest'")
    is_float, is_bool = last_value.is_floating_point(), last_value.dtype == torch.bool
    if interpolation == "linear" and not (is_float or is_bool):
        raise ValueError(f"linear interpolation of {last_value.dtype} values would invent labels; use 'nearest'")

    work_dtype = last_value.dtype if is_float else torch.float64
    values = last_value.to(work_dtype)
    values = values.unsqueeze(1) if last_value.dim() == 3 else values
    rows, columns = torch.meshgrid(
        torch.arange(height, dtype=work_dtype, device=values.device),
        torch.arange(width, dtype=work_dtype, device=values.device),
        indexing="ij",
    )
    displacement = steps * flow.to(device=values.device, dtype=work_dtype)
    source_columns = columns + displacement[..., 0]
    source_rows = rows + displacement[..., 1]
    grid = torch.stack((2 * source_columns / (width - 1) - 1, 2 * source_rows / (height - 1) - 1), dim=-1)
    mode = "bilinear" if interpolation == "linear" else "nearest"
    warped = F.grid_sample(values, grid, mode=mode, padding_mode="border", align_corners=True)
    warped = warped.squeeze(1) if last_value.dim() == 3 else warped
    if is_float:
        return warped
    if is_bool:
        return warped >= BOOLEAN_THRESHOLD
    return warped.round().to(last_value.dtype)


def warp_masks(masks: torch.Tensor, flow: torch.Tensor, steps: int) -> torch.Tensor:
    """Boolean instance masks (N, H, W) of the last frame carried ``steps`` frames ahead at the constant velocity of
    that frame's backward flow (H, W, 2) (:func:`extrapolate`, nearest neighbour): bool (N, H, W) on the flow's
    device; N may be 0. The optical-flow baseline of the instance forecasters."""
    warped = masks.to(flow.device)[None].float()
    if warped.shape[1]:
        warped = extrapolate(warped, flow[None], steps=steps, interpolation="nearest")
    return warped[0] > 0.5


def flow_forecast(inputs: torch.Tensor, steps: int, method: FlowMethod = "farneback") -> torch.Tensor:
    """Flow-extrapolation forecast of RGB clips (B, T, 3, H, W) in [-1, 1], T >= 2 -> (B, steps, 3, H, W).

    The backward flow between the last two input frames is estimated once (:func:`batch_flow`); step ``k`` is the
    direct bilinear warp of the last frame by ``k`` times that velocity (:func:`extrapolate` with ``steps=k``), not a
    recursive warp of the previous prediction, so errors are not resampled at every step.
    """
    if inputs.dim() != 5 or inputs.shape[1] < 2 or inputs.shape[2] != 3:
        raise ValueError(f"expected inputs (B, T >= 2, 3, H, W), got {tuple(inputs.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    last = inputs[:, -1]
    flow = batch_flow(inputs[:, -2], last, method)
    return torch.stack([extrapolate(last, flow, steps=step) for step in range(1, steps + 1)], dim=1)
