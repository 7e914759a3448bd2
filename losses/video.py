"""Image-space losses of frame prediction (Mathieu, Couprie and LeCun 2016, "Deep multi-scale video prediction
beyond mean square error"): the ``L_p`` distance and the gradient difference loss (GDL).

Both take a prediction ``P`` and a target ``Y`` of the same shape and return a scalar. The adversarial terms of the
paper are :func:`losses.adversarial.discriminator_real_fake_loss` and
:func:`losses.adversarial.generator_non_saturating_loss`.
"""

from __future__ import annotations

from typing import Literal

import torch

GradientDifferenceReduction = Literal["mean", "sum"]


def _check_same_shape(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def lp_loss(pred: torch.Tensor, target: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``L_p = mean(|Y - P|^p)`` over all elements (the paper uses p = 1 and p = 2).

    The paper writes ``||Y - P||_p^p``, a sum over pixels; the mean used here divides it by the number of elements,
    so that loss weights do not depend on the batch size, the number of channels or the image size.
    """
    _check_same_shape(pred, target)
    if p <= 0:
        raise ValueError(f"p must be positive, got {p}")
    return (pred - target).abs().pow(p).mean()


def gradient_difference_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    reduction: GradientDifferenceReduction = "mean",
) -> torch.Tensor:
    """Gradient difference loss on tensors (..., H, W), typically (N, C, H, W), with H, W >= 2.

    With ``i`` the row and ``j`` the column index, the paper's loss is

    ``L_gdl = sum_ij | |Y_ij - Y_(i-1)j| - |P_ij - P_(i-1)j| |^alpha + | |Y_i(j-1) - Y_ij| - |P_i(j-1) - P_ij| |^alpha``

    where the vertical term exists for rows ``i = 1 .. H-1`` (all columns) and the horizontal term for columns
    ``j = 1 .. W-1`` (all rows), for every leading index (sample, channel). The inner absolute values are part of the
    loss: the prediction is compared with the target on gradient magnitudes, not on signed differences.

    - ``reduction="sum"``: the paper's raw sum of both terms over all their elements.
    - ``reduction="mean"``: each term is averaged over its own elements (``(...) x (H-1) x W`` vertical,
      ``(...) x H x (W-1)`` horizontal) and the two means are added, so the value does not depend on the image or
      batch size.
    """
    _check_same_shape(pred, target)
    if pred.dim() < 2 or pred.shape[-2] < 2 or pred.shape[-1] < 2:
        raise ValueError(f"expected tensors (..., H, W) with H, W >= 2, got {tuple(pred.shape)}")
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    vertical = ((target.diff(dim=-2).abs() - pred.diff(dim=-2).abs()).abs()).pow(alpha)
    horizontal = ((target.diff(dim=-1).abs() - pred.diff(dim=-1).abs()).abs()).pow(alpha)
    if reduction == "mean":
        return vertical.mean() + horizontal.mean()
    if reduction == "sum":
        return vertical.sum() + horizontal.sum()
    raise ValueError(f"unknown reduction {reduction!r}; expected 'mean' or 'sum'")


def multiscale_reconstruction_loss(predictions: list[torch.Tensor], target: torch.Tensor, lambda_lp: float = 1.0,
                                   lambda_gdl: float = 1.0, p: float = 1.0) -> torch.Tensor:
    """``sum_k lambda_lp L_p(P_k, Y_k) + lambda_gdl L_gdl(P_k, Y_k)`` over the scales of a multiscale prediction.

    ``predictions`` run coarse to fine, each scale halving the next one's size; ``Y_k`` is the target average-pooled
    to scale k (2x2 pooling per scale below the finest), as the multiscale networks' pyramid pools their inputs.
    With ``p = 1`` and weights 1 it is the S2S loss of Luc et al. (2017), l1 + GDL at every scale.
    """
    finest = len(predictions) - 1
    total = target.new_zeros(())
    for scale, prediction in enumerate(predictions):
        factor = 2 ** (finest - scale)
        scaled = torch.nn.functional.avg_pool2d(target, factor) if factor > 1 else target
        total = total + lambda_lp * lp_loss(prediction, scaled, p) + lambda_gdl * gradient_difference_loss(prediction,
                                                                                                            scaled)
    return total
