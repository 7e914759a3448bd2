"""Real/fake and auxiliary losses against hand-worked values of their formulas."""

import math

import pytest
import torch

from losses import (
    auxiliary_classification_loss,
    discriminator_real_fake_loss,
    generator_non_saturating_loss,
    generator_real_fake_loss,
    generator_saturating_loss,
)

LN3 = math.log(3.0)


def test_discriminator_loss_hand_worked():
    # D(real) = sigmoid(ln 3) = 3/4, D(fake) = sigmoid(-ln 3) = 1/4: -ln 3/4 - ln(1 - 1/4) = -2 ln 3/4.
    loss = discriminator_real_fake_loss(torch.tensor([LN3, LN3]), torch.tensor([-LN3]))
    assert loss.item() == pytest.approx(-2 * math.log(0.75), rel=1e-6)


def test_generator_saturating_hand_worked():
    # D(G(z)) = 1/4: log(1 - 1/4).
    assert generator_saturating_loss(torch.tensor([-LN3])).item() == pytest.approx(math.log(0.75), rel=1e-6)


def test_generator_non_saturating_hand_worked():
    # D(G(z)) = 1/4: -log 1/4.
    assert generator_non_saturating_loss(torch.tensor([-LN3])).item() == pytest.approx(-math.log(0.25), rel=1e-6)


def test_generator_forms_dispatch_and_reject_unknown():
    logits = torch.randn(8)
    assert generator_real_fake_loss(logits, "saturating") == generator_saturating_loss(logits)
    assert generator_real_fake_loss(logits, "non_saturating") == generator_non_saturating_loss(logits)
    with pytest.raises(ValueError, match="saturating"):
        generator_real_fake_loss(logits, "hinge")


def test_saturating_gradient_vanishes_where_non_saturating_does_not():
    rejected = torch.tensor([-12.0], requires_grad=True)
    generator_saturating_loss(rejected).backward()
    saturating_grad = rejected.grad.abs().item()
    rejected.grad = None
    generator_non_saturating_loss(rejected).backward()
    assert saturating_grad < 1e-4 < rejected.grad.abs().item()


def test_auxiliary_classification_hand_worked():
    # softmax(0, ln 3) = (1/4, 3/4); labels (1, 0): mean(-ln 3/4, -ln 1/4).
    logits = torch.tensor([[0.0, LN3], [0.0, LN3]])
    expected = -0.5 * (math.log(0.75) + math.log(0.25))
    assert auxiliary_classification_loss(logits, torch.tensor([1, 0])).item() == pytest.approx(expected, rel=1e-6)
