from __future__ import annotations

import numpy as np
import pytest
import torch

from metrics.novelty import NearestTrainingDistance


def _brute_force_mean_nearest(generated: np.ndarray, reference: np.ndarray) -> float:
    distances = np.sqrt(((generated[:, None, :] - reference[None, :, :]) ** 2).sum(axis=-1))
    return float(distances.min(axis=1).mean())


def test_matches_brute_force_with_chunking() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(103, 16))
    generated = rng.normal(size=(41, 16))
    metric = NearestTrainingDistance(chunk_size=7)
    metric.set_reference(torch.from_numpy(reference))
    for chunk in np.array_split(generated, 3):
        metric.update(torch.from_numpy(chunk))
    assert metric.compute().item() == pytest.approx(_brute_force_mean_nearest(generated, reference), rel=1e-10)


def test_copies_of_training_features_have_zero_distance() -> None:
    reference = torch.randn(64, 32)
    metric = NearestTrainingDistance(chunk_size=16)
    metric.set_reference(reference)
    metric.update(reference[torch.randperm(64)[:40]])
    assert metric.compute().item() == 0.0


def test_merging_two_ranks_matches_single_pass() -> None:
    rng = np.random.default_rng(1)
    reference = torch.from_numpy(rng.normal(size=(50, 8)))
    generated = torch.from_numpy(rng.normal(size=(30, 8)))
    ranks = [NearestTrainingDistance(), NearestTrainingDistance()]
    for rank, half in zip(ranks, generated.split(20)):
        rank.set_reference(reference)
        rank.update(half)
    ranks[0].merge_state(ranks[1])
    expected = _brute_force_mean_nearest(generated.numpy(), reference.numpy())
    assert ranks[0].compute().item() == pytest.approx(expected, rel=1e-10)


def test_reference_survives_reset_and_is_not_saved() -> None:
    metric = NearestTrainingDistance()
    metric.set_reference(torch.randn(10, 4))
    metric.update(torch.randn(3, 4))
    metric.reset()
    assert metric.reference is not None
    assert "reference" not in metric.state_dict()
    metric.update(torch.randn(2, 4))
    assert int(metric.count) == 2


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_errors() -> None:
    metric = NearestTrainingDistance()
    with pytest.raises(RuntimeError, match="set_reference"):
        metric.update(torch.randn(3, 4))
    metric.set_reference(torch.randn(10, 4))
    with pytest.raises(ValueError, match=r"\(M, 4\)"):
        metric.update(torch.randn(3, 5))
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()
