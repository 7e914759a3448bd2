"""Fréchet distance between Gaussian fits of real and generated feature sets.

:class:`FeatureFID` works on any feature extractor (e.g. the ResNet-18 classifier's pooled features) and keeps only
sufficient statistics, so it is exact, memory-bounded and distributed-safe. :func:`inception_fid` builds torchmetrics'
Inception-v3 FID from a local weights file.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance

_REAL_STATES = ("real_sum", "real_outer_sum", "real_count")


def trace_sqrt_product(covariance_a: Tensor, covariance_b: Tensor) -> Tensor:
    """``Tr((A B)^{1/2})`` for symmetric positive semi-definite A and B, computed with symmetric eigendecompositions.

    ``A B`` is similar to the symmetric PSD matrix ``A^{1/2} B A^{1/2}``, so both share their (non-negative)
    eigenvalues and ``Tr((A B)^{1/2}) = sum_i sqrt(lambda_i(A^{1/2} B A^{1/2}))``. Eigenvalues that round-off pushes
    below zero are clamped to 0.
    """
    eigenvalues_a, eigenvectors_a = torch.linalg.eigh(covariance_a)
    sqrt_a = (eigenvectors_a * eigenvalues_a.clamp(min=0).sqrt()) @ eigenvectors_a.T
    product = sqrt_a @ covariance_b @ sqrt_a
    product = (product + product.T) / 2
    return torch.linalg.eigvalsh(product).clamp(min=0).sqrt().sum()


class FeatureFID(Metric):
    """Fréchet distance between real and generated features (FID when the features come from Inception-v3).

    ``FID = ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2})`` where ``mu`` are feature means and ``S`` the
    unbiased covariances ``S = (sum_i x_i x_i^T - n mu mu^T) / (n - 1)``.

    States (all summed across processes, float64): per set, the feature sum (D,), the outer-product sum (D, D) and
    the sample count. ``update(features, real)`` adds a batch of (N, D) features to the real or generated set.
    With ``reset_real_features=False`` the real statistics survive :meth:`reset`, so a fixed real set is only
    accumulated once across epochs. ``compute`` returns a float64 scalar and needs at least two samples per set.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, num_features: int, reset_real_features: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        self.num_features = num_features
        self.reset_real_features = reset_real_features
        for prefix in ("real", "fake"):
            self.add_state(f"{prefix}_sum", torch.zeros(num_features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(
                f"{prefix}_outer_sum",
                torch.zeros(num_features, num_features, dtype=torch.float64),
                dist_reduce_fx="sum",
            )
            self.add_state(f"{prefix}_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, features: Tensor, real: bool) -> None:
        """Accumulate (N, D) ``features`` into the real (``real=True``) or generated statistics."""
        if features.dim() != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"expected features of shape (N, {self.num_features}), got {tuple(features.shape)}")
        features = features.detach().to(torch.float64)
        prefix = "real" if real else "fake"
        # Out-of-place additions keep float64 even if a dtype cast reached the states.
        setattr(self, f"{prefix}_sum", getattr(self, f"{prefix}_sum") + features.sum(dim=0))
        setattr(self, f"{prefix}_outer_sum", getattr(self, f"{prefix}_outer_sum") + features.T @ features)
        setattr(self, f"{prefix}_count", getattr(self, f"{prefix}_count") + features.shape[0])

    def forward(self, features: Tensor, real: bool) -> None:
        """Accumulate like :meth:`update` and return nothing.

        A per-batch FID is meaningless, and torchmetrics' batch-value path (which resets and re-merges the states)
        would count kept real statistics twice.
        """
        self.update(features, real=real)

    def compute(self) -> Tensor:
        """Fréchet distance between the accumulated real and generated Gaussians (float64 scalar)."""
        real_count, fake_count = int(self.real_count), int(self.fake_count)
        if real_count < 2 or fake_count < 2:
            raise RuntimeError(
                f"FeatureFID needs at least 2 real and 2 generated samples, got {real_count} and {fake_count}"
            )
        mean_real, covariance_real = _mean_and_covariance(self.real_sum, self.real_outer_sum, real_count)
        mean_fake, covariance_fake = _mean_and_covariance(self.fake_sum, self.fake_outer_sum, fake_count)
        mean_term = (mean_real - mean_fake).square().sum()
        trace_term = covariance_real.trace() + covariance_fake.trace()
        return mean_term + trace_term - 2 * trace_sqrt_product(covariance_real, covariance_fake)

    def reset(self) -> None:
        """Reset the states; the real statistics are kept when ``reset_real_features`` is False."""
        kept = {} if self.reset_real_features else {name: getattr(self, name) for name in _REAL_STATES}
        super().reset()
        for name, value in kept.items():
            setattr(self, name, value)


def _mean_and_covariance(feature_sum: Tensor, outer_sum: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance from the sufficient statistics ``sum x``, ``sum x x^T`` and ``n``."""
    mean = feature_sum.to(torch.float64) / count
    covariance = (outer_sum.to(torch.float64) - count * torch.outer(mean, mean)) / (count - 1)
    return mean, covariance


def inception_fid(
    weights_path: str | Path, feature: int = 2048, normalize: bool = True, **kwargs: Any
) -> FrechetInceptionDistance:
    """torchmetrics' Inception-v3 ``FrechetInceptionDistance`` loading its weights from a local file (no download).

    With ``normalize=True`` (default) it expects float images in [0, 1]: feed ``(x + 1) / 2`` for generator outputs in
    [-1, 1]. Extra keyword arguments (e.g. ``reset_real_features``) are passed to torchmetrics.

    Raises:
        FileNotFoundError: if ``weights_path`` does not exist (checked before anything else, so nothing is fetched).
        RuntimeError: if the installed torchmetrics cannot take a local weights file.
    """
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"Inception-v3 FID weights not found: {weights_path}")
    if "feature_extractor_weights_path" not in inspect.signature(FrechetInceptionDistance.__init__).parameters:
        raise RuntimeError(
            "the installed torchmetrics FrechetInceptionDistance has no `feature_extractor_weights_path` argument, "
            "so it would download its weights; upgrade torchmetrics to use a local Inception-v3 file"
        )
    return FrechetInceptionDistance(
        feature=feature, normalize=normalize, feature_extractor_weights_path=str(weights_path), **kwargs
    )
