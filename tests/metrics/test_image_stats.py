from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from metrics.image_stats import ImageStatistics


def _reference_statistics(images: np.ndarray) -> dict[str, float]:
    unit = np.clip((images + 1) / 2, 0, 1)
    grey = 0.299 * unit[:, 0] + 0.587 * unit[:, 1] + 0.114 * unit[:, 2]
    per_image = grey.reshape(len(grey), -1)
    return {
        "mean_intensity": float(grey.mean()),
        "darkness": float((grey < 0.25).mean()),
        "skewness": float(np.mean(scipy.stats.skew(per_image, axis=1, bias=True))),
    }


def _skewed_images(seed: int, count: int = 12, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.gamma(shape=2.0, scale=0.3, size=(count, 3, size, size)) - 1, -1, 1)


def test_matches_numpy_and_scipy() -> None:
    images = _skewed_images(0)
    metric = ImageStatistics()
    for chunk in np.array_split(images, 3):
        metric.update(torch.from_numpy(chunk))
    result = metric.compute()
    for name, value in _reference_statistics(images).items():
        assert result[name].item() == pytest.approx(value, rel=1e-10, abs=1e-12), name


def test_float32_inputs_match_reference() -> None:
    images = _skewed_images(1).astype(np.float32)
    metric = ImageStatistics()
    metric.update(torch.from_numpy(images))
    result = metric.compute()
    for name, value in _reference_statistics(images.astype(np.float64)).items():
        assert result[name].item() == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_constant_images_have_zero_skewness() -> None:
    images = torch.full((2, 3, 8, 8), -0.4)
    metric = ImageStatistics()
    metric.update(images)
    result = metric.compute()
    assert result["skewness"].item() == 0.0
    assert result["mean_intensity"].item() == pytest.approx(0.3)
    assert result["darkness"].item() == 0.0


def test_merging_two_ranks_matches_single_pass() -> None:
    images = _skewed_images(2)
    ranks = [ImageStatistics(), ImageStatistics()]
    ranks[0].update(torch.from_numpy(images[:5]))
    ranks[1].update(torch.from_numpy(images[5:]))
    ranks[0].merge_state(ranks[1])
    result = ranks[0].compute()
    for name, value in _reference_statistics(images).items():
        assert result[name].item() == pytest.approx(value, rel=1e-10, abs=1e-12), name


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_errors() -> None:
    metric = ImageStatistics()
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()
    with pytest.raises(ValueError, match="3 or 1"):
        metric.update(torch.zeros(2, 4, 8, 8))
