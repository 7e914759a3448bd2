"""Grey-level statistics of generated images (brightness, share of dark pixels, skewness), used to compare models."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights used to turn RGB into grey levels."""
_FLOAT64_RESOLUTION = 1e-15


def grey_levels(images: Tensor) -> Tensor:
    """Grey levels (N, H, W) in [0, 1] of images (N, 3 or 1, H, W) in [-1, 1].

    ``g = 0.299 r + 0.587 g + 0.114 b`` on the channels mapped to [0, 1] by ``(x + 1) / 2`` (and clamped);
    single-channel images are used as they are.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 3 or 1, H, W), got {tuple(images.shape)}")
    unit = ((images.detach().to(torch.float64) + 1) / 2).clamp(0, 1)
    if unit.shape[1] == 1:
        return unit[:, 0]
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64, device=unit.device).view(1, 3, 1, 1)
    return (unit * weights).sum(dim=1)


class ImageStatistics(Metric):
    """Grey-level statistics over a set of images in [-1, 1] (see :func:`grey_levels`).

    With grey levels ``g`` in [0, 1]:

    - ``mean_intensity``: mean of ``g`` over all pixels of all images.
    - ``darkness``: fraction of all pixels with ``g < dark_threshold`` (0.25 by default, the darkest quarter of
      the grey range).
    - ``skewness``: mean over images of the per-image skewness of ``g``, Fisher's moment coefficient
      ``m3 / m2^{3/2}`` with biased central moments ``m_k = mean((g - mean(g))^k)`` (``scipy.stats.skew`` with
      ``bias=True``). A constant image (``m2 = 0``, where scipy returns NaN) counts as 0.

    States are sums and counts (summed across processes), so the result is exact for any batching or sharding.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, dark_threshold: float = 0.25, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dark_threshold = dark_threshold
        self.add_state("intensity_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("dark_pixel_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("pixel_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skewness_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("image_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, images: Tensor) -> None:
        """Accumulate the statistics of images (N, 3, H, W) in [-1, 1]."""
        grey = grey_levels(images).flatten(start_dim=1)
        image_means = grey.mean(dim=1, keepdim=True)
        centred = grey - image_means
        second_moment = centred.square().mean(dim=1)
        third_moment = centred.pow(3).mean(dim=1)
        # Same constant-image test as scipy: variance within float64 round-off of the mean.
        non_constant = second_moment > (_FLOAT64_RESOLUTION * image_means[:, 0]).square()
        skewness = torch.where(non_constant, third_moment / torch.where(non_constant, second_moment, 1.0).pow(1.5), 0.0)
        self.intensity_sum = self.intensity_sum + grey.sum()
        self.dark_pixel_count = self.dark_pixel_count + (grey < self.dark_threshold).sum()
        self.pixel_count = self.pixel_count + grey.numel()
        self.skewness_sum = self.skewness_sum + skewness.sum()
        self.image_count = self.image_count + grey.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"mean_intensity", "darkness", "skewness"}`` as float64 scalars."""
        if int(self.image_count) == 0:
            raise RuntimeError("ImageStatistics.compute called before any update")
        return {
            "mean_intensity": self.intensity_sum / self.pixel_count,
            "darkness": self.dark_pixel_count.to(torch.float64) / self.pixel_count,
            "skewness": self.skewness_sum / self.image_count,
        }
