"""L_p and gradient difference losses against hand-worked values and a transcription of the paper's sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from losses.video import gradient_difference_loss, lp_loss, multiscale_reconstruction_loss

# Hand-worked 3 x 3 example (one sample, one channel).
# Y = [[0, 1, 3],     P = [[0, 0, 0],
#      [2, 2, 0],          [1, 1, 1],
#      [1, 0, 0]]          [0, 0, 0]]
# Vertical |Y_ij - Y_(i-1)j| (rows i = 1, 2): [[2, 1, 3], [1, 2, 0]]; for P: [[1, 1, 1], [1, 1, 1]].
#   | . - . | = [[1, 0, 2], [0, 1, 1]]: sum 5 (alpha = 1), squares sum 1 + 4 + 1 + 1 = 7 (alpha = 2); 6 elements.
# Horizontal |Y_i(j-1) - Y_ij| (columns j = 1, 2): [[1, 2], [0, 2], [1, 0]]; for P: all 0.
#   | . - . | = [[1, 2], [0, 2], [1, 0]]: sum 6 (alpha = 1), squares sum 1 + 4 + 4 + 1 = 10 (alpha = 2); 6 elements.
TARGET_3X3 = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 0.0], [1.0, 0.0, 0.0]]]])
PRED_3X3 = torch.tensor([[[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]]])


def _paper_gdl_sum(pred: np.ndarray, target: np.ndarray, alpha: float) -> float:
    """sum_ij ||Y_ij - Y_(i-1)j| - |P_ij - P_(i-1)j||^a + ||Y_i(j-1) - Y_ij| - |P_i(j-1) - P_ij||^a, each term where
    its neighbour exists, over all samples and channels, with explicit loops in float64."""
    total = 0.0
    num_samples, num_channels, height, width = target.shape
    for n in range(num_samples):
        for c in range(num_channels):
            y, p = target[n, c], pred[n, c]
            for i in range(height):
                for j in range(width):
                    if i >= 1:
                        total += abs(abs(y[i, j] - y[i - 1, j]) - abs(p[i, j] - p[i - 1, j])) ** alpha
                    if j >= 1:
                        total += abs(abs(y[i, j - 1] - y[i, j]) - abs(p[i, j - 1] - p[i, j])) ** alpha
    return total


def _paper_gdl_term_means(pred: np.ndarray, target: np.ndarray, alpha: float) -> float:
    vertical = np.abs(np.abs(np.diff(target, axis=-2)) - np.abs(np.diff(pred, axis=-2))) ** alpha
    horizontal = np.abs(np.abs(np.diff(target, axis=-1)) - np.abs(np.diff(pred, axis=-1))) ** alpha
    return float(vertical.mean() + horizontal.mean())


def test_lp_loss_hand_worked() -> None:
    pred = torch.tensor([[0.0, 1.0], [-2.0, 3.0]])
    target = torch.zeros(2, 2)
    assert lp_loss(pred, target, p=1).item() == pytest.approx((0 + 1 + 2 + 3) / 4)
    assert lp_loss(pred, target, p=2).item() == pytest.approx((0 + 1 + 4 + 9) / 4)
    assert lp_loss(pred, target).item() == pytest.approx(3.5)


@pytest.mark.parametrize("p", [1.0, 2.0, 1.5])
def test_lp_loss_is_the_mean_of_the_paper_sum(p: float) -> None:
    generator = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 5, 7, generator=generator, dtype=torch.float64)
    target = torch.randn(2, 3, 5, 7, generator=generator, dtype=torch.float64)
    paper_sum = float((np.abs(target.numpy() - pred.numpy()) ** p).sum())
    assert lp_loss(pred, target, p=p).item() == pytest.approx(paper_sum / pred.numel(), rel=1e-12)


def test_gdl_hand_worked_alpha_1() -> None:
    assert gradient_difference_loss(PRED_3X3, TARGET_3X3, reduction="sum").item() == pytest.approx(5 + 6)
    assert gradient_difference_loss(PRED_3X3, TARGET_3X3).item() == pytest.approx(5 / 6 + 6 / 6)


def test_gdl_hand_worked_alpha_2() -> None:
    assert gradient_difference_loss(PRED_3X3, TARGET_3X3, alpha=2, reduction="sum").item() == pytest.approx(7 + 10)
    assert gradient_difference_loss(PRED_3X3, TARGET_3X3, alpha=2).item() == pytest.approx(7 / 6 + 10 / 6)


@pytest.mark.parametrize(("seed", "alpha"), [(0, 1.0), (1, 2.0), (2, 1.5)])
def test_gdl_matches_double_loop_transcription(seed: int, alpha: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    pred = torch.randn(2, 3, 5, 6, generator=generator, dtype=torch.float64)
    target = torch.randn(2, 3, 5, 6, generator=generator, dtype=torch.float64)
    expected_sum = _paper_gdl_sum(pred.numpy(), target.numpy(), alpha)
    summed = gradient_difference_loss(pred, target, alpha, reduction="sum")
    assert summed.item() == pytest.approx(expected_sum, rel=1e-12)
    # "mean": vertical sum / (2 * 3 * 4 * 6) + horizontal sum / (2 * 3 * 5 * 5).
    expected_mean = _paper_gdl_term_means(pred.numpy(), target.numpy(), alpha)
    assert gradient_difference_loss(pred, target, alpha).item() == pytest.approx(expected_mean, rel=1e-12)


def test_gdl_compares_gradient_magnitudes_not_signs() -> None:
    # The inner absolute values: P = -Y has Y's gradient magnitudes everywhere, so the GDL is 0 (signed differences
    # would give 2 sum |dY| = 30), while P = Y / 2 leaves half of every magnitude unmatched: sum |dY| / 2, with
    # sum |dY| = (2 + 1 + 3 + 1 + 2 + 0) + (1 + 2 + 0 + 2 + 1 + 0) = 15.
    assert gradient_difference_loss(-TARGET_3X3, TARGET_3X3, reduction="sum").item() == 0.0
    assert gradient_difference_loss(TARGET_3X3 / 2, TARGET_3X3, reduction="sum").item() == pytest.approx(15 / 2)


def test_gdl_ignores_constant_offsets_and_is_zero_on_equal_inputs() -> None:
    target = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    assert gradient_difference_loss(target, target).item() == 0.0
    assert gradient_difference_loss(target + 0.5, target).item() == pytest.approx(0.0, abs=1e-6)


def test_gdl_accepts_any_leading_dimensions() -> None:
    generator = torch.Generator().manual_seed(4)
    pred = torch.randn(2, 4, 3, 6, 5, generator=generator, dtype=torch.float64)
    target = torch.randn(2, 4, 3, 6, 5, generator=generator, dtype=torch.float64)
    flat = gradient_difference_loss(pred.flatten(0, 1), target.flatten(0, 1), reduction="sum")
    assert gradient_difference_loss(pred, target, reduction="sum").item() == pytest.approx(flat.item(), rel=1e-12)
    single = gradient_difference_loss(pred[0, 0, 0], target[0, 0, 0], reduction="sum")
    expected = _paper_gdl_sum(pred[0, 0, 0][None, None].numpy(), target[0, 0, 0][None, None].numpy(), 1.0)
    assert single.item() == pytest.approx(expected, rel=1e-12)


def test_losses_are_differentiable() -> None:
    generator = torch.Generator().manual_seed(5)
    pred = torch.randn(2, 3, 6, 6, generator=generator, requires_grad=True)
    target = torch.randn(2, 3, 6, 6, generator=generator)
    (lp_loss(pred, target, p=1) + lp_loss(pred, target) + gradient_difference_loss(pred, target)).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="same shape"):
        lp_loss(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="positive"):
        lp_loss(torch.zeros(2), torch.zeros(2), p=0)
    with pytest.raises(ValueError, match="H, W >= 2"):
        gradient_difference_loss(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))
    with pytest.raises(ValueError, match="reduction"):
        gradient_difference_loss(PRED_3X3, TARGET_3X3, reduction="max")  # type: ignore[arg-type]


def test_multiscale_reconstruction_loss_hand_worked():
    # Y: a 2x2 block of 4s in the top-right of a 4x4 frame; its 2x2 pooling is [[0, 4], [0, 0]]; zero predictions.
    target = torch.tensor([[0.0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 0, 0], [0, 0, 0, 0]])[None, None]
    predictions = [torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4)]
    # fine: L1 = 16 / 16 = 1; GDL = 8 / 12 (vertical) + 8 / 12 (horizontal) = 4 / 3
    # coarse: L1 = 4 / 4 = 1; GDL = 4 / 2 + 4 / 2 = 4
    assert multiscale_reconstruction_loss(predictions, target).item() == pytest.approx(1 + 4 / 3 + 1 + 4)
    assert multiscale_reconstruction_loss(predictions, target, lambda_lp=2.0, lambda_gdl=0.5).item() == pytest.approx(
        2 + 2 / 3 + 2 + 2)
    # p = 2: fine L2 = 4 * 16 / 16 = 4; coarse L2 = 16 / 4 = 4
    assert multiscale_reconstruction_loss(predictions, target, p=2.0).item() == pytest.approx(4 + 4 / 3 + 4 + 4)
