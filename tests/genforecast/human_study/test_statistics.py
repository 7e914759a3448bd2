"""The report's statistics against known answers: bootstrap intervals, Bradley-Terry, Krippendorff's alpha."""

from __future__ import annotations

import math

import numpy as np

from genforecast.human_study.statistics import bradley_terry, krippendorff_alpha, two_way_bootstrap


def test_bootstrap_of_a_constant_is_that_constant() -> None:
    interval = two_way_bootstrap(np.full(30, 3.0), np.arange(30) % 5, np.arange(30) % 6, 200,
                                 np.random.default_rng(0))
    assert (interval.value, interval.low, interval.high) == (3.0, 3.0, 3.0)


def test_bootstrap_interval_covers_the_mean_and_widens_with_rater_clustering() -> None:
    rng = np.random.default_rng(1)
    raters, items = np.repeat(np.arange(10), 20), np.tile(np.arange(20), 10)
    independent = rng.normal(3.0, 1.0, 200)
    clustered = independent + rng.normal(0, 1.0, 10)[raters]  # each rater shifts all its answers
    narrow = two_way_bootstrap(independent, raters, items, 500, np.random.default_rng(2))
    wide = two_way_bootstrap(clustered, raters, items, 500, np.random.default_rng(2))
    assert narrow.low < independent.mean() < narrow.high
    assert wide.high - wide.low > 1.5 * (narrow.high - narrow.low)


def test_bootstrap_without_replicates_or_data() -> None:
    assert math.isnan(two_way_bootstrap(np.array([]), np.array([]), np.array([]), 10, np.random.default_rng()).value)
    interval = two_way_bootstrap(np.array([1.0, 2.0]), np.array([0, 1]), np.array([0, 0]), 0, np.random.default_rng())
    assert interval.value == 1.5 and math.isnan(interval.low)


def test_bradley_terry_recovers_known_strengths() -> None:
    rng = np.random.default_rng(3)
    truth = np.array([-1.0, 0.0, 1.0])
    first, second = rng.integers(0, 3, 6000), rng.integers(0, 3, 6000)
    keep = first != second
    first, second = first[keep], second[keep]
    first_wins = rng.random(len(first)) < 1 / (1 + np.exp(truth[second] - truth[first]))
    winners, losers = np.where(first_wins, first, second), np.where(first_wins, second, first)
    strengths = bradley_terry(winners, losers, 3, 50, np.random.default_rng(4))
    estimate = np.array([strength.value for strength in strengths])
    assert np.allclose(estimate, truth, atol=0.1)
    assert all(strength.low < true < strength.high for strength, true in zip(strengths, truth))


def test_bradley_terry_stays_finite_when_one_level_always_wins() -> None:
    strengths = bradley_terry(np.array([1, 1, 1]), np.array([0, 0, 0]), 2, 20, np.random.default_rng(5))
    assert strengths[1].value > strengths[0].value and all(np.isfinite(s.value) for s in strengths)


def test_krippendorff_alpha_on_perfect_agreement_chance_and_no_overlap() -> None:
    items = np.tile(np.arange(8), 3)
    raters = np.repeat(np.arange(3), 8)
    values = (np.arange(8) % 5 + 1.0)[items]
    assert krippendorff_alpha(values, raters, items, "ordinal", [1, 2, 3, 4, 5]) == 1.0
    noise = np.random.default_rng(6).integers(1, 6, 24).astype(float)
    assert abs(krippendorff_alpha(noise, raters, items, "ordinal", [1, 2, 3, 4, 5])) < 0.4
    assert math.isnan(krippendorff_alpha(np.array([1.0, 2.0]), np.array([0, 1]), np.array([0, 1]), "nominal",
                                         [1.0, 2.0]))
