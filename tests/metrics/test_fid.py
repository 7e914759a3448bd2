from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from metrics.fid import FeatureFID, inception_fid, trace_sqrt_product


def _reference_fid(real: np.ndarray, fake: np.ndarray) -> float:
    mean_real, mean_fake = real.mean(axis=0), fake.mean(axis=0)
    covariance_real, covariance_fake = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    sqrt_product = scipy.linalg.sqrtm(covariance_real @ covariance_fake).real
    return float(np.sum((mean_real - mean_fake) ** 2) + np.trace(covariance_real + covariance_fake - 2 * sqrt_product))


def _gaussian_features(seed: int, num_real: int = 300, num_fake: int = 200, dim: int = 8) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(num_real, dim)) @ rng.normal(size=(dim, dim))
    fake = rng.normal(loc=0.5, size=(num_fake, dim)) @ rng.normal(size=(dim, dim))
    return real, fake


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_reference(seed: int) -> None:
    real, fake = _gaussian_features(seed)
    metric = FeatureFID(num_features=8)
    for chunk in np.array_split(real, 3):
        metric.update(torch.from_numpy(chunk).float(), real=True)
    metric.update(torch.from_numpy(fake).float(), real=False)
    expected = _reference_fid(real.astype(np.float32).astype(np.float64), fake.astype(np.float32).astype(np.float64))
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)


def test_identical_sets_give_zero() -> None:
    real, _ = _gaussian_features(3)
    metric = FeatureFID(num_features=8)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(real), real=False)
    assert metric.compute().item() == pytest.approx(0.0, abs=1e-8)


def test_rank_deficient_covariances_are_stable() -> None:
    rng = np.random.default_rng(4)
    real = rng.normal(size=(5, 8))
    fake = rng.normal(size=(4, 8))
    metric = FeatureFID(num_features=8)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    value = metric.compute().item()
    assert np.isfinite(value)
    assert value == pytest.approx(_reference_fid(real, fake), rel=1e-5)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_merging_two_ranks_matches_single_pass() -> None:
    real, fake = _gaussian_features(5)
    single = FeatureFID(num_features=8)
    single.update(torch.from_numpy(real), real=True)
    single.update(torch.from_numpy(fake), real=False)

    ranks = [FeatureFID(num_features=8), FeatureFID(num_features=8)]
    for rank, real_half, fake_half in zip(ranks, np.array_split(real, 2), np.array_split(fake, 2)):
        rank.update(torch.from_numpy(real_half), real=True)
        rank.update(torch.from_numpy(fake_half), real=False)

    merged = FeatureFID(num_features=8)
    merged.merge_state(ranks[0])
    merged.merge_state(ranks[1])
    summed = FeatureFID(num_features=8)
    summed.merge_state(
        {name: ranks[0].metric_state[name] + ranks[1].metric_state[name] for name in ranks[0].metric_state}
    )

    expected = _reference_fid(real, fake)
    assert single.compute().item() == pytest.approx(expected, rel=1e-8)
    assert merged.compute().item() == pytest.approx(expected, rel=1e-8)
    assert summed.compute().item() == pytest.approx(expected, rel=1e-8)


def test_real_statistics_can_survive_reset() -> None:
    real, fake = _gaussian_features(6)
    keep = FeatureFID(num_features=8, reset_real_features=False)
    drop = FeatureFID(num_features=8)
    for metric in (keep, drop):
        metric.update(torch.from_numpy(real), real=True)
        metric.update(torch.from_numpy(fake), real=False)
        metric.reset()
    assert int(keep.real_count) == len(real) and int(keep.fake_count) == 0
    assert int(drop.real_count) == 0
    keep.update(torch.from_numpy(fake), real=False)
    assert keep.compute().item() == pytest.approx(_reference_fid(real, fake), rel=1e-8)


def test_calling_the_metric_accumulates_without_double_counting() -> None:
    real, fake = _gaussian_features(8)
    metric = FeatureFID(num_features=8, reset_real_features=False)
    assert metric(torch.from_numpy(real), real=True) is None
    assert metric(torch.from_numpy(fake), real=False) is None
    assert int(metric.real_count) == len(real)
    assert metric.compute().item() == pytest.approx(_reference_fid(real, fake), rel=1e-8)


def test_compute_needs_two_samples_per_set() -> None:
    metric = FeatureFID(num_features=4)
    metric.update(torch.randn(5, 4), real=True)
    metric.update(torch.randn(1, 4), real=False)
    with pytest.raises(RuntimeError, match="at least 2"):
        metric.compute()


def test_feature_dimension_is_checked() -> None:
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        FeatureFID(num_features=4).update(torch.randn(5, 3), real=True)


def test_trace_sqrt_product_matches_scipy() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    covariance_a, covariance_b = a @ a.T, b @ b.T
    expected = np.trace(scipy.linalg.sqrtm(covariance_a @ covariance_b).real)
    value = trace_sqrt_product(torch.from_numpy(covariance_a), torch.from_numpy(covariance_b)).item()
    assert value == pytest.approx(expected, rel=1e-8)


def test_inception_fid_missing_weights_file_fails_before_download(tmp_path: Path) -> None:
    missing = tmp_path / "pt_inception-2015-12-05.pth"
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05.pth"):
        inception_fid(missing)
