from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from metrics.classifier_scores import ClassifierScores


def _reference_scores(logits: np.ndarray) -> dict[str, float]:
    probabilities = scipy.special.softmax(logits, axis=1)
    marginal = probabilities.mean(axis=0)
    entropies = [scipy.stats.entropy(row) for row in probabilities]
    divergences = [scipy.stats.entropy(row, marginal) for row in probabilities]
    return {"entropy": float(np.mean(entropies)), "score": float(np.exp(np.mean(divergences)))}


@pytest.mark.parametrize("temperature", [0.3, 1.0, 5.0])
def test_matches_scipy_reference(temperature: float) -> None:
    logits = np.random.default_rng(0).normal(size=(120, 7)) * temperature
    metric = ClassifierScores(num_classes=7)
    for chunk in np.array_split(logits, 4):
        metric.update(torch.from_numpy(chunk))
    result = metric.compute()
    expected = _reference_scores(logits)
    assert result["entropy"].item() == pytest.approx(expected["entropy"], rel=1e-10)
    assert result["score"].item() == pytest.approx(expected["score"], rel=1e-10)


def test_confident_balanced_predictions_score_num_classes() -> None:
    logits = torch.full((70, 7), -50.0)
    logits[torch.arange(70), torch.arange(70) % 7] = 50.0
    metric = ClassifierScores(num_classes=7)
    metric.update(logits)
    result = metric.compute()
    assert result["entropy"].item() == pytest.approx(0.0, abs=1e-12)
    assert result["score"].item() == pytest.approx(7.0, rel=1e-10)


def test_masked_classes_are_handled() -> None:
    logits = torch.tensor([[0.0, 0.0, float("-inf")], [1.0, float("-inf"), 0.0]], dtype=torch.float64)
    metric = ClassifierScores(num_classes=3)
    metric.update(logits)
    result = metric.compute()
    expected = _reference_scores(logits.numpy())
    assert result["entropy"].item() == pytest.approx(expected["entropy"], rel=1e-10)
    assert result["score"].item() == pytest.approx(expected["score"], rel=1e-10)


def test_merging_two_ranks_matches_single_pass() -> None:
    logits = np.random.default_rng(1).normal(size=(50, 5))
    ranks = [ClassifierScores(num_classes=5), ClassifierScores(num_classes=5)]
    ranks[0].update(torch.from_numpy(logits[:20]))
    ranks[1].update(torch.from_numpy(logits[20:]))
    ranks[0].merge_state(ranks[1])
    result = ranks[0].compute()
    expected = _reference_scores(logits)
    assert result["entropy"].item() == pytest.approx(expected["entropy"], rel=1e-10)
    assert result["score"].item() == pytest.approx(expected["score"], rel=1e-10)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_errors() -> None:
    metric = ClassifierScores(num_classes=4)
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        metric.update(torch.randn(3, 5))
