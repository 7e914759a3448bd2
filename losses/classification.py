"""Auxiliary classification loss of the discriminator's classification branch ``D_b``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def auxiliary_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-class cross-entropy of ``D_b`` on real images: ``mean_i[-log softmax(D_b(x_i))_{c_i}]``.

    This is DesIGN's ``L_D classif`` (the AC-GAN style branch that the creativity losses later push the
    generator away from). ``logits`` is (N, K), ``labels`` holds class indices (N,).
    """
    return F.cross_entropy(logits, labels)
