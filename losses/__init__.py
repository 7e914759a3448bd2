"""Pure loss functions of the suite; each docstring states the formula it implements."""

from losses.adversarial import (
    discriminator_real_fake_loss,
    generator_non_saturating_loss,
    generator_real_fake_loss,
    generator_saturating_loss,
)
from losses.classification import auxiliary_classification_loss
from losses.creativity import can_loss, holistic_can_loss
from losses.video import gradient_difference_loss, lp_loss, multiscale_reconstruction_loss

__all__ = [
    "auxiliary_classification_loss",
    "can_loss",
    "discriminator_real_fake_loss",
    "generator_non_saturating_loss",
    "generator_real_fake_loss",
    "generator_saturating_loss",
    "gradient_difference_loss",
    "holistic_can_loss",
    "lp_loss",
    "multiscale_reconstruction_loss",
]
