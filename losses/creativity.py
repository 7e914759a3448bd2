"""Creativity losses of the generator, on the class logits ``D_b(G(z))`` of the discriminator.

Both take logits of shape (N, K) and return the mean over the batch. They push the generated images away from
every known class (shape or texture) so that the discriminator's classifier cannot tell which one they belong to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def can_loss(logits: torch.Tensor) -> torch.Tensor:
    """CAN creativity loss (Elgammal et al. 2017): K independent sigmoids pushed to ``1/K``.

    ``L_CAN = mean_i - sum_k [ (1/K) log s(l_ik) + (1 - 1/K) log(1 - s(l_ik)) ]`` with ``s`` the sigmoid,
    i.e. a sum over classes of binary cross-entropies against the soft target ``1/K``.
    """
    num_classes = logits.shape[-1]
    target = torch.full_like(logits, 1.0 / num_classes)
    per_class = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return per_class.sum(dim=-1).mean()


def holistic_can_loss(logits: torch.Tensor) -> torch.Tensor:
    """Holistic creativity loss CAN(H) of DesIGN: cross-entropy between ``softmax(l)`` and the uniform law.

    ``L_CAN(H) = mean_i - sum_k (1/K) log softmax_k(l_i)``. Its gradient with respect to the logits of one
    sample is ``(softmax(l_i) - 1/K) / N``, so it is minimal (``log K``) when all classes are equally likely.
    """
    return -F.log_softmax(logits, dim=-1).mean(dim=-1).mean()
