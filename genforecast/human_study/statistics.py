"""The statistics of the report, as pure functions of answer arrays (no database, no files, no plotting).

* :func:`two_way_bootstrap`: confidence intervals of a mean when answers cluster both by rater and by image. Each
  replicate resamples raters and images with replacement (as HYPE does) and weights every answer by how often its
  rater and its image were drawn; the interval is the 2.5 and 97.5 percentiles of the replicates.
* :func:`bradley_terry`: the variants' log-strengths from pairwise votes (``choix.ilsr_pairwise``, centred to mean
  0, a small ridge so a level that never lost stays finite), with percentile intervals from resampling the votes.
* :func:`krippendorff_alpha`: agreement of raters over items (``krippendorff``), NaN when no item has two ratings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_CHUNK = 100
BT_RIDGE = 0.01
"""``alpha`` of choix's ILSR: keeps strengths finite when a level wins (or loses) every vote."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval (NaN where it cannot be computed)."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def _factorize(values: np.ndarray) -> tuple[np.ndarray, int]:
    _, codes = np.unique(values, return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1 if len(codes) else 0


def two_way_bootstrap(values: np.ndarray, raters: np.ndarray, items: np.ndarray, replicates: int,
                      rng: np.random.Generator) -> Interval:
    """Mean of ``values`` with a 95% interval from resampling raters and items (see the module docstring).

    ``raters`` and ``items`` label each value (any hashable labels); with ``replicates == 0`` the interval is NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return Interval(math.nan, math.nan, math.nan)
    mean = float(values.mean())
    if replicates <= 0:
        return Interval(mean, math.nan, math.nan)
    rater_codes, n_raters = _factorize(np.asarray(raters))
    item_codes, n_items = _factorize(np.asarray(items))
    means = []
    for start in range(0, replicates, BOOTSTRAP_CHUNK):  # chunks bound the (replicates, answers) weight matrix
        size = min(BOOTSTRAP_CHUNK, replicates - start)
        rater_draws = rng.multinomial(n_raters, np.full(n_raters, 1 / n_raters), size=size)
        item_draws = rng.multinomial(n_items, np.full(n_items, 1 / n_items), size=size)
        weights = rater_draws[:, rater_codes] * item_draws[:, item_codes]
        totals = weights.sum(axis=1)
        means.append(np.where(totals > 0, (weights * values).sum(axis=1) / np.maximum(totals, 1), np.nan))
    low, high = np.nanpercentile(np.concatenate(means), [2.5, 97.5])
    return Interval(mean, float(low), float(high))


def bradley_terry(winners: np.ndarray, losers: np.ndarray, levels: int, replicates: int,
                  rng: np.random.Generator) -> list[Interval]:
    """Centred Bradley-Terry log-strengths of ``levels`` levels from votes ``winners[k]`` over ``losers[k]``."""
    import choix

    winners, losers = np.asarray(winners, dtype=int), np.asarray(losers, dtype=int)
    if len(winners) == 0 or levels < 2:
        return [Interval(math.nan, math.nan, math.nan)] * levels

    def fit(index: np.ndarray) -> np.ndarray:
        params = choix.ilsr_pairwise(levels, list(zip(winners[index], losers[index])), alpha=BT_RIDGE)
        return params - params.mean()

    estimate = fit(np.arange(len(winners)))
    if replicates <= 0:
        return [Interval(float(value), math.nan, math.nan) for value in estimate]
    samples = np.stack([fit(rng.integers(0, len(winners), len(winners))) for _ in range(replicates)])
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    return [Interval(float(value), float(lo), float(hi)) for value, lo, hi in zip(estimate, low, high)]


def krippendorff_alpha(values: np.ndarray, raters: np.ndarray, items: np.ndarray, level: str,
                       domain: list[float]) -> float:
    """Krippendorff's alpha of ratings ``values`` at ``level`` (``ordinal``, ``nominal``...) over ``domain``."""
    import krippendorff

    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return math.nan
    rater_codes, n_raters = _factorize(np.asarray(raters))
    item_codes, n_items = _factorize(np.asarray(items))
    matrix = np.full((n_raters, n_items), np.nan)
    matrix[rater_codes, item_codes] = values
    if not ((~np.isnan(matrix)).sum(axis=0) >= 2).any():
        return math.nan
    try:
        return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level, value_domain=domain))
    except (ValueError, ZeroDivisionError):
        return math.nan
