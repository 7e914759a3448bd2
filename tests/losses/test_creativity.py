"""CAN and CAN(H) against hand-worked values and a direct transcription of the paper's formulas."""

import math

import numpy as np
import pytest
import torch

from losses import can_loss, holistic_can_loss


def _paper_can(logits: np.ndarray) -> float:
    """L_CAN = -sum_k [1/K log s(l_k) + (1 - 1/K) log(1 - s(l_k))], averaged over samples, in float64 numpy."""
    k = logits.shape[1]
    s = 1.0 / (1.0 + np.exp(-logits))
    per_sample = -((1.0 / k) * np.log(s) + (1.0 - 1.0 / k) * np.log(1.0 - s)).sum(axis=1)
    return float(per_sample.mean())


def _paper_holistic(logits: np.ndarray) -> float:
    """L_CAN(H) = -sum_k 1/K log softmax_k(l), averaged over samples, in float64 numpy."""
    k = logits.shape[1]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax = e / e.sum(axis=1, keepdims=True)
    return float((-(1.0 / k) * np.log(softmax)).sum(axis=1).mean())


def test_can_loss_zero_logits_is_k_log_2():
    # s(0) = 1/2 for every class: -sum_k [1/K log 1/2 + (1-1/K) log 1/2] = K log 2.
    assert can_loss(torch.zeros(3, 7)).item() == pytest.approx(7 * math.log(2), rel=1e-6)


def test_can_loss_two_classes_hand_worked():
    # K = 2, logits (0, ln 3): s = (1/2, 3/4).
    # class 1: -(1/2 ln 1/2 + 1/2 ln 1/2) = ln 2; class 2: -(1/2 ln 3/4 + 1/2 ln 1/4).
    expected = math.log(2) - 0.5 * (math.log(0.75) + math.log(0.25))
    assert can_loss(torch.tensor([[0.0, math.log(3.0)]])).item() == pytest.approx(expected, rel=1e-6)


def test_can_loss_minimum_is_at_sigmoid_one_over_k():
    k = 7
    at_target = torch.full((1, k), math.log((1 / k) / (1 - 1 / k)), requires_grad=True)
    loss = can_loss(at_target)
    loss.backward()
    assert at_target.grad.abs().max().item() < 1e-6
    assert loss.item() < can_loss(at_target.detach() + 0.5).item()


def test_holistic_can_loss_uniform_logits_is_log_k():
    assert holistic_can_loss(torch.full((4, 7), 3.0)).item() == pytest.approx(math.log(7), rel=1e-6)


def test_holistic_can_loss_hand_worked():
    # K = 2, logits (0, ln 3): softmax = (1/4, 3/4); loss = -(1/2 ln 1/4 + 1/2 ln 3/4).
    expected = -0.5 * (math.log(0.25) + math.log(0.75))
    assert holistic_can_loss(torch.tensor([[0.0, math.log(3.0)]])).item() == pytest.approx(expected, rel=1e-6)


def test_holistic_gradient_is_softmax_minus_uniform_over_n():
    logits = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    holistic_can_loss(logits).backward()
    expected = (torch.softmax(logits.detach(), dim=1) - 1 / 7) / 5
    torch.testing.assert_close(logits.grad, expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_losses_match_numpy_transcription(seed):
    logits = torch.randn(16, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 4
    assert can_loss(logits).item() == pytest.approx(_paper_can(logits.numpy()), rel=1e-9)
    assert holistic_can_loss(logits).item() == pytest.approx(_paper_holistic(logits.numpy()), rel=1e-9)


def test_losses_finite_for_saturated_logits():
    logits = torch.tensor([[200.0, -200.0, 0.0]])
    assert torch.isfinite(can_loss(logits))
    assert torch.isfinite(holistic_can_loss(logits))
