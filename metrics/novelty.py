"""Novelty of generated images measured as the distance to their nearest training image in feature space."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


class NearestTrainingDistance(Metric):
    """Mean Euclidean distance from each generated sample to its nearest training (reference) feature.

    ``novelty = (1 / M) sum_j min_i ||f_j - r_i||_2`` over generated features ``f_j`` and reference features ``r_i``.
    Low values flag copies of training images; a creative generator keeps it away from zero while staying realistic.

    The reference set is given once with :meth:`set_reference` and held as a non-persistent buffer (not a metric
    state: it is neither reset nor reduced, and every process must set the same full reference set). The states are
    the sum of nearest distances (float64) and the sample count, both summed across processes. Distances are computed
    with ``torch.cdist`` in chunks of ``chunk_size`` rows on both sides, without the matrix-multiplication shortcut,
    so an exact copy of a reference feature gives a distance of exactly 0.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    reference: Tensor | None

    def __init__(self, chunk_size: int = 1024, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.chunk_size = chunk_size
        self.register_buffer("reference", None, persistent=False)
        self.add_state("distance_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def set_reference(self, features: Tensor) -> None:
        """Use the (R, D) training-image ``features`` as the reference set (replaces any previous one)."""
        if features.dim() != 2 or features.shape[0] == 0:
            raise ValueError(f"expected non-empty reference features of shape (R, D), got {tuple(features.shape)}")
        self.reference = features.detach().to(device=self.device)

    def nearest_distances(self, features: Tensor) -> Tensor:
        """Distance (M,) from each of the (M, D) ``features`` to its nearest reference feature."""
        if self.reference is None:
            raise RuntimeError("call set_reference(training_features) before using NearestTrainingDistance")
        if features.dim() != 2 or features.shape[1] != self.reference.shape[1]:
            raise ValueError(f"expected features of shape (M, {self.reference.shape[1]}), got {tuple(features.shape)}")
        features = features.detach().to(device=self.reference.device, dtype=self.reference.dtype)
        nearest = []
        for query in features.split(self.chunk_size):
            chunk_minima = [
                torch.cdist(query, reference_chunk, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1)
                for reference_chunk in self.reference.split(self.chunk_size)
            ]
            nearest.append(torch.stack(chunk_minima, dim=1).amin(dim=1))
        return torch.cat(nearest)

    def update(self, features: Tensor) -> None:
        """Add the nearest-reference distances of (M, D) generated ``features``."""
        distances = self.nearest_distances(features)
        self.distance_sum = self.distance_sum + distances.sum(dtype=torch.float64)
        self.count = self.count + distances.numel()

    def compute(self) -> Tensor:
        """Mean nearest-reference distance over all generated samples (float64 scalar)."""
        if int(self.count) == 0:
            raise RuntimeError("NearestTrainingDistance.compute called before any update")
        return self.distance_sum / self.count
