"""Frame-prediction metrics of Mathieu, Couprie and LeCun (2016): PSNR, SSIM and sharpness difference, over full
frames or over moving areas.

Conventions shared by every function and metric of this module:

- Frames are (B, 3, H, W) in [-1, 1] (the models' range). They are mapped to [0, 1] by ``(x + 1) / 2`` (clamped) and
  every formula uses the peak value ``max = 1``.
- ``channels="rgb"`` uses the three channels, ``channels="y"`` the ITU-R BT.601 luma
  ``0.299 r + 0.587 g + 0.114 b`` in [0, 1] (:func:`metrics.image_stats.grey_levels`; no studio-swing offset).
- Moving areas are a boolean mask (B, H, W), true on moving pixels (see :func:`moving_area_mask`). Two masking
  conventions exist (:data:`MaskingConvention`):

  - ``"restrict"``: the metric is computed over the masked pixels only.
  - ``"official"``: the released Lua evaluation code's convention: static pixels are set to -1 (black) in *both*
    frames and the metric is computed over the whole frame, so static pixels count as perfectly predicted; frames
    whose PSNR is at least 50 dB are skipped.

- Metrics are computed per frame and averaged over frames, as in the paper.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from baselines.optical_flow import FlowMethod, batch_flow
from metrics.image_stats import grey_levels

MaskingConvention = Literal["restrict", "official"]
ChannelMode = Literal["rgb", "y"]

OFFICIAL_SKIP_PSNR = 50.0
"""Frames with a PSNR (dB) at least this are skipped by the ``"official"`` convention."""
SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
MOVING_FLOW_THRESHOLD = 0.5
"""Default flow magnitude (pixels per frame) from which a pixel counts as moving."""


def unit_range(frames: Tensor) -> Tensor:
    """Frames in [-1, 1] mapped to [0, 1] in float64: ``clamp((x + 1) / 2, 0, 1)`` (a new tensor)."""
    # In place on a fresh copy: the same operations without a new full-size temporary per step.
    return frames.detach().to(torch.float64, copy=True).add_(1).div_(2).clamp_(0, 1)


def _channels(frames: Tensor, channels: ChannelMode) -> Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 3, H, W) or (B, 1, H, W) in [0, 1], float64."""
    if channels == "rgb":
        return unit_range(frames)
    if channels == "y":
        return grey_levels(frames).unsqueeze(1)
    raise ValueError(f"unknown channel mode {channels!r}; expected 'rgb' or 'y'")


def _check_frames(pred: Tensor, target: Tensor, mask: Tensor | None) -> None:
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"expected pred and target (B, 3, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    expected_mask_shape = (pred.shape[0], pred.shape[2], pred.shape[3])
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != expected_mask_shape):
        raise ValueError(f"expected a bool mask of shape {expected_mask_shape}, got {mask.dtype} {tuple(mask.shape)}")


def _masked_frame_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Per-frame mean of (B, C, H, W) values over all elements, or over the channels of the masked pixels.

    A frame with an empty mask gives NaN.
    """
    if mask is None:
        return values.flatten(1).mean(dim=1)
    weights = mask.unsqueeze(1).to(values.dtype).expand_as(values)
    return (values * weights).flatten(1).sum(dim=1) / weights.flatten(1).sum(dim=1)


def official_masking(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Both frames with their static pixels (``mask`` false) set to -1, as in the released evaluation code."""
    static = ~mask.unsqueeze(1)
    return pred.masked_fill(static, -1.0), target.masked_fill(static, -1.0)


def frame_psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None, channels: ChannelMode = "rgb") -> Tensor:
    """Per-frame PSNR (B,) in dB: ``10 log10(max^2 / MSE)`` with ``max = 1`` on [0, 1] frames.

    The MSE is over all channels and pixels, or over the channels of the pixels where ``mask`` is true
    (``"restrict"``). A perfect frame gives +inf, a frame with an empty mask NaN.
    """
    _check_frames(pred, target, mask)
    squared_error = _channels(pred, channels).sub_(_channels(target, channels)).square_()
    return -10 * torch.log10(_masked_frame_mean(squared_error, mask))


def _gaussian_window_matrix(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(size - 10, size) matrix whose row ``i`` holds the normalised 11-tap Gaussian at columns ``i .. i + 10``.

    Multiplying by it applies the 1-D window at every valid position (a banded matrix product, much faster than a
    float64 convolution on CPU).
    """
    offsets = torch.arange(SSIM_WINDOW_SIZE, dtype=dtype, device=device) - (SSIM_WINDOW_SIZE - 1) / 2
    window = torch.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    window = window / window.sum()
    num_positions = size - SSIM_WINDOW_SIZE + 1
    columns = torch.arange(num_positions, device=device).unsqueeze(1) + torch.arange(SSIM_WINDOW_SIZE, device=device)
    matrix = torch.zeros(num_positions, size, dtype=dtype, device=device)
    return matrix.scatter_(1, columns, window.expand(num_positions, -1).contiguous())


def ssim_map(pred_unit: Tensor, target_unit: Tensor) -> Tensor:
    """SSIM map (B, C, H - 10, W - 10) of images (B, C, H, W) in [0, 1] (peak 1), per channel, valid windows only.

    Local statistics are Gaussian-weighted (11 x 11 separable window, sigma 1.5, normalised to sum 1) with population
    (not sample) moments: ``mu_x = w * x``, ``s_x^2 = w * x^2 - mu_x^2``, ``s_xy = w * (x y) - mu_x mu_y``, and

    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``,
    ``C1 = (0.01 max)^2``, ``C2 = (0.03 max)^2``.

    Only windows that fit inside the image are used (no padding), so entry ``(i, j)`` is centred on pixel
    ``(i + 5, j + 5)``. This is scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` map with its 5-pixel border cropped, the part it averages.
    """
    if pred_unit.shape[-2] < SSIM_WINDOW_SIZE or pred_unit.shape[-1] < SSIM_WINDOW_SIZE:
        raise ValueError(
            f"SSIM needs frames of at least {SSIM_WINDOW_SIZE} x {SSIM_WINDOW_SIZE}, got {pred_unit.shape}"
        )
    batch, num_channels, height, width = pred_unit.shape
    # The five maps to filter, written into one buffer (no concatenated copy); the formula below is evaluated in place
    # on the filtered buffer, operation for operation as written above, so the values are the same.
    stacked = pred_unit.new_empty(batch, 5 * num_channels, height, width)
    pred_part, target_part, pred_square, target_square, cross = stacked.split(num_channels, dim=1)
    pred_part.copy_(pred_unit)
    target_part.copy_(target_unit)
    torch.mul(pred_unit, pred_unit, out=pred_square)
    torch.mul(target_unit, target_unit, out=target_square)
    torch.mul(pred_unit, target_unit, out=cross)
    rows_window = _gaussian_window_matrix(height, stacked.dtype, stacked.device)
    columns_window = _gaussian_window_matrix(width, stacked.dtype, stacked.device)
    filtered = rows_window @ stacked @ columns_window.T
    mean_pred, mean_target, second_pred, second_target, second_cross = filtered.split(num_channels, dim=1)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mean_pred_square, mean_target_square = mean_pred.square(), mean_target.square()
    mean_product = mean_pred * mean_target
    covariance_term = second_cross.sub_(mean_product).mul_(2).add_(c2)  # 2 s_xy + C2
    numerator = mean_product.mul_(2).add_(c1).mul_(covariance_term)  # (2 mu_x mu_y + C1)(2 s_xy + C2)
    variance_term = second_pred.sub_(mean_pred_square).add_(second_target.sub_(mean_target_square)).add_(c2)
    denominator = mean_pred_square.add_(mean_target_square).add_(c1).mul_(variance_term)
    return numerator.div_(denominator)


def frame_ssim(pred: Tensor, target: Tensor, mask: Tensor | None = None, channels: ChannelMode = "rgb") -> Tensor:
    """Per-frame SSIM (B,): the mean of :func:`ssim_map` over channels and positions.

    With a mask (``"restrict"``), the mean is over the map positions whose centre pixel is masked, i.e. over
    ``mask[:, 5:-5, 5:-5]``; a frame without such a position gives NaN.
    """
    _check_frames(pred, target, mask)
    similarity = ssim_map(_channels(pred, channels), _channels(target, channels))
    border = (SSIM_WINDOW_SIZE - 1) // 2
    cropped_mask = None if mask is None else mask[:, border:-border, border:-border]
    return _masked_frame_mean(similarity, cropped_mask)


def gradient_magnitude_sum(grey: Tensor) -> Tensor:
    """``|g_ij - g_(i-1)j| + |g_ij - g_i(j-1)|`` (B, H - 1, W - 1) of grey images (B, H, W), for i, j >= 1."""
    vertical = (grey[:, 1:, 1:] - grey[:, :-1, 1:]).abs()
    horizontal = (grey[:, 1:, 1:] - grey[:, 1:, :-1]).abs()
    return vertical + horizontal


def frame_sharpness_difference(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-frame sharpness difference (B,) in dB on the BT.601 grey levels ``g`` in [0, 1] (``max = 1``):

    ``10 log10(max^2 / mean_ij |(d_i Y + d_j Y) - (d_i P + d_j P)|)`` with the backward absolute differences
    ``d_i g = |g_ij - g_(i-1)j|`` and ``d_j g = |g_ij - g_i(j-1)|`` (:func:`gradient_magnitude_sum`), over the pixels
    ``i = 1 .. H-1``, ``j = 1 .. W-1`` where both exist. With a mask (``"restrict"``) the mean is over those pixels
    where ``mask`` is true (``mask[:, 1:, 1:]``). Identical gradients give +inf, an empty mask NaN.
    """
    _check_frames(pred, target, mask)
    difference = (gradient_magnitude_sum(grey_levels(target)) - gradient_magnitude_sum(grey_levels(pred))).abs()
    cropped_mask = None if mask is None else mask[:, 1:, 1:]
    return -10 * torch.log10(_masked_frame_mean(difference.unsqueeze(1), cropped_mask))


def moving_area_mask(
    previous_frame: Tensor,
    frame: Tensor,
    threshold: float = MOVING_FLOW_THRESHOLD,
    dilation: int = 0,
    method: FlowMethod = "farneback",
) -> Tensor:
    """Boolean moving-area mask (B, H, W) of ``frame`` from the optical flow between two batches (B, 3, H, W).

    The backward flow ``f`` of (previous_frame, frame) is computed on the grey frames by
    :func:`baselines.optical_flow.batch_flow` (OpenCV Farneback by default, or DIS); a pixel of ``frame`` is moving
    when ``|f| >= threshold`` pixels (0.5 by default). ``dilation > 0`` then grows the mask by a
    ``(2 dilation + 1)``-pixel square. For evaluation, pass the last observed frame and the ground-truth target.
    """
    if threshold < 0 or dilation < 0:
        raise ValueError(f"threshold and dilation must be non-negative, got {threshold} and {dilation}")
    flow = batch_flow(previous_frame, frame, method)
    moving = (flow.norm(dim=-1) >= threshold).cpu().numpy().astype(np.uint8)
    if dilation > 0:
        kernel = np.ones((2 * dilation + 1, 2 * dilation + 1), dtype=np.uint8)
        moving = np.stack([cv2.dilate(frame_mask, kernel) for frame_mask in moving])
    return torch.from_numpy(moving.astype(bool)).to(frame.device)


class _FrameAveragedMetric(Metric):
    """Mean over frames of a per-frame metric, with a masking convention and an optional PSNR-based skip rule.

    ``update(pred, target, mask=None)`` takes frames (B, 3, H, W) in [-1, 1] and an optional bool mask (B, H, W) of
    moving pixels; without a mask the full frame is used. With a mask:

    - ``masking="restrict"``: the per-frame value is computed over the masked pixels; frames where it is undefined
      (NaN: no masked pixel where the per-frame function averages) are skipped.
    - ``masking="official"``: static pixels are set to -1 in both frames (:func:`official_masking`) and the value is
      computed over the whole frame.

    Skip rule: a frame is skipped when its RGB PSNR, under the same masking convention, is at least
    ``skip_psnr_above``. ``None`` (default) means no skipping for ``"restrict"`` and :data:`OFFICIAL_SKIP_PSNR`
    (50 dB) for ``"official"``; pass ``math.inf`` to keep every frame. The rule applies with or without a mask and
    also skips perfect frames (+inf PSNR).

    States (summed across processes): the sum of the kept per-frame values (float64), the number of kept frames and
    the number of skipped frames. ``compute`` returns their mean (float64 scalar), NaN when no frame was kept; a
    kept perfect frame (+inf PSNR or sharpness difference) makes it +inf.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        masking: MaskingConvention = "restrict",
        skip_psnr_above: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if masking not in ("restrict", "official"):
            raise ValueError(f"unknown masking convention {masking!r}; expected 'restrict' or 'official'")
        self.masking = masking
        if skip_psnr_above is None:
            skip_psnr_above = OFFICIAL_SKIP_PSNR if masking == "official" else math.inf
        self.skip_psnr_above = skip_psnr_above
        self.add_state("value_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("frame_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @abstractmethod
    def _frame_values(self, pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        """Per-frame values (B,) of frames in [-1, 1], over the pixels where ``mask`` is true when it is given."""

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Accumulate the per-frame values of a batch of predictions and targets (B, 3, H, W) in [-1, 1]."""
        _check_frames(pred, target, mask)
        if mask is not None and self.masking == "official":
            pred, target = official_masking(pred, target, mask)
            mask = None
        values = self._frame_values(pred, target, mask)
        kept = torch.ones_like(values, dtype=torch.bool) if mask is None else ~values.isnan()
        if self.skip_psnr_above < math.inf:
            kept &= frame_psnr(pred, target, mask) < self.skip_psnr_above
        self.value_sum = self.value_sum + values[kept].sum()
        self.frame_count = self.frame_count + kept.sum()
        self.skipped_count = self.skipped_count + (~kept).sum()

    def compute(self) -> Tensor:
        """Mean of the kept per-frame values (NaN if none was kept)."""
        if int(self.frame_count) == 0:
            return torch.tensor(math.nan, dtype=torch.float64, device=self.value_sum.device)
        return self.value_sum / self.frame_count


class _ChannelledFrameMetric(_FrameAveragedMetric):
    """A frame metric computed on the RGB channels (``channels="rgb"``) or on the BT.601 luma (``"y"``)."""

    def __init__(
        self,
        masking: MaskingConvention = "restrict",
        skip_psnr_above: float | None = None,
        channels: ChannelMode = "rgb",
        **kwargs: Any,
    ) -> None:
        super().__init__(masking=masking, skip_psnr_above=skip_psnr_above, **kwargs)
        self.channels = channels


class FramePSNR(_ChannelledFrameMetric):
    """Mean per-frame PSNR (dB), :func:`frame_psnr`: ``10 log10(1 / MSE)`` on frames mapped to [0, 1].

    ``channels`` is ``"rgb"`` (MSE over the three channels) or ``"y"`` (BT.601 luma). See
    :class:`_FrameAveragedMetric` for masks, the skip rule and the states.
    """

    def _frame_values(self, pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        return frame_psnr(pred, target, mask, self.channels)


class FrameSSIM(_ChannelledFrameMetric):
    """Mean per-frame SSIM, :func:`frame_ssim`: Gaussian 11 x 11 window, sigma 1.5, K1 = 0.01, K2 = 0.03, peak 1.

    Valid windows only (the map of an H x W frame is (H - 10) x (W - 10)), matching the mean of scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``.
    ``channels="rgb"`` averages the three channels' maps, ``"y"`` uses the BT.601 luma. See
    :class:`_FrameAveragedMetric` for masks, the skip rule and the states.
    """

    def _frame_values(self, pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        return frame_ssim(pred, target, mask, self.channels)


class SharpnessDifference(_FrameAveragedMetric):
    """Mean per-frame sharpness difference (dB), :func:`frame_sharpness_difference`, on BT.601 grey levels.

    See :class:`_FrameAveragedMetric` for masks, the skip rule and the states.
    """

    def _frame_values(self, pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        return frame_sharpness_difference(pred, target, mask)
