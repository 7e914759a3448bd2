"""Real/fake adversarial losses on discriminator logits.

Every function takes raw logits ``l`` (the discriminator's output before the sigmoid, ``D = sigmoid(l)``) and
returns the mean over the batch, computed with ``softplus`` so that saturated logits stay finite:
``-log sigmoid(l) = softplus(-l)`` and ``-log(1 - sigmoid(l)) = softplus(l)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

GeneratorLossForm = Literal["saturating", "non_saturating"]


def discriminator_real_fake_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the discriminator, real = 1 and fake = 0.

    ``L_D = mean_i[-log D(x_i)] + mean_j[-log(1 - D(G(z_j)))]`` (Goodfellow et al. 2014; DesIGN's
    ``L_D real/fake``; Mathieu et al.'s ``L_adv^D`` with the same targets).
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_saturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The minimax generator loss as written in DesIGN: ``L_G = mean_j log(1 - D(G(z_j)))`` (minimised).

    Its gradient vanishes when the discriminator confidently rejects the samples, which is why the
    non-saturating form exists.
    """
    return -F.softplus(fake_logits).mean()


def generator_non_saturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss: ``L_G = mean_j[-log D(G(z_j))]``, i.e. BCE towards the real label.

    This is also Mathieu et al.'s ``L_adv^G`` (the generator is trained so that D outputs 1 on predictions).
    """
    return F.softplus(-fake_logits).mean()


def generator_real_fake_loss(fake_logits: torch.Tensor, form: GeneratorLossForm = "non_saturating") -> torch.Tensor:
    """Dispatch to :func:`generator_saturating_loss` or :func:`generator_non_saturating_loss`."""
    if form == "saturating":
        return generator_saturating_loss(fake_logits)
    if form == "non_saturating":
        return generator_non_saturating_loss(fake_logits)
    raise ValueError(f"unknown generator loss form {form!r}; expected 'saturating' or 'non_saturating'")
