"""Classifier-based scores of generated images: class ambiguity (entropy) and an Inception-score-style quantity."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


class ClassifierScores(Metric):
    """Mean predictive entropy and Inception-score-style score of a classifier's predictions on generated images.

    With ``p_i = softmax(logits_i)`` over K classes for N samples and the marginal ``p = (1 / N) sum_i p_i``:

    - ``entropy = (1 / N) sum_i H(p_i)`` with ``H(q) = -sum_k q_k log q_k`` (nats): high when samples are
      ambiguous between classes, the quantity DesIGN's creativity loss pushes up.
    - ``score = exp((1 / N) sum_i KL(p_i || p))``. Since ``sum_k p_ik log p_k`` averaged over i equals
      ``sum_k p_k log p_k``, the mean KL is exactly ``H(p) - entropy``, so the score needs only the entropy sum,
      the probability sum and the count (no per-sample storage). All three states are summed across processes.
      The score is computed on the whole set (a single split, unlike the 10-split Inception Score protocol).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = num_classes
        self.add_state("entropy_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("probability_sum", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor) -> None:
        """Accumulate the softmax predictions of (N, K) ``logits``."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"expected logits of shape (N, {self.num_classes}), got {tuple(logits.shape)}")
        log_probabilities = torch.log_softmax(logits.detach().to(torch.float64), dim=1)
        probabilities = log_probabilities.exp()
        # Classes with zero probability (e.g. -inf logits) contribute 0 log 0 = 0.
        entropies = -torch.where(probabilities > 0, probabilities * log_probabilities, 0.0).sum(dim=1)
        self.entropy_sum = self.entropy_sum + entropies.sum()
        self.probability_sum = self.probability_sum + probabilities.sum(dim=0)
        self.count = self.count + logits.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"entropy": mean per-sample entropy (nats), "score": exp(mean KL to the marginal)}`` (float64)."""
        count = int(self.count)
        if count == 0:
            raise RuntimeError("ClassifierScores.compute called before any update")
        mean_entropy = self.entropy_sum / count
        marginal = self.probability_sum / count
        marginal_entropy = -torch.special.xlogy(marginal, marginal).sum()
        mean_kl = (marginal_entropy - mean_entropy).clamp(min=0)
        return {"entropy": mean_entropy, "score": mean_kl.exp()}
