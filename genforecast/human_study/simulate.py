"""``human-study simulate``: raters with known preferences answer a study, to show the report recovers them.

Simulated raters go through the same assignment (:func:`next_assignment`) and the same answer storage
(:func:`record_answer`) as real ones, on a simulated clock. Their answers follow a known model:

* each group ``g`` (variant or control) has a :class:`Preference`: mean likability and novelty on the 1-5 scale,
  the probability of answering "human", and a Bradley-Terry log-strength for the pairwise task;
* each image has its own quality offset (normal, sd 0.5) and novelty offset; when the image has an automatic
  novelty score, its novelty offset is ``novelty_weight`` times the score's z-score among the generated images
  plus noise, so simulated raters perceive the automatic novelty partly (by construction, not a finding);
* each rater has a leniency offset per scale (sd 0.4) and a bias to answer "human" (logit, sd 0.5); each answer
  adds noise (sd 0.6) and is rounded and clipped to 1-5;
* a pair is decided by ``P(left) = sigmoid(s_left - s_right + 0.5 (q_left - q_right))``.

Without explicit preferences, variants get increasing preferences in study-file order (the first one lowest,
the last one highest): for the demo's gan, can, canh this is the paper's ordering, so the report should rank
canh > can > gan on every measure.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genforecast.human_study.assignment import AssignmentPlan, answer_and_assign_next, next_assignment, open_assignment
from genforecast.human_study.config import CONTROL, load_study_config
from genforecast.human_study.create import CONFIG_NAME
from genforecast.human_study.storage import DATABASE_NAME, Answer, add_rater, items, open_database


@dataclass(frozen=True)
class Preference:
    """What simulated raters think of one group on average."""

    likability: float
    novelty: float
    human: float
    strength: float


CONTROL_PREFERENCE = Preference(likability=3.4, novelty=2.6, human=0.8, strength=0.6)


def default_preferences(variants: list[str]) -> dict[str, Preference]:
    """Increasing preferences in the given order (see the module docstring), and the controls'."""
    preferences = {}
    for index, variant in enumerate(variants):
        level = index / (len(variants) - 1) if len(variants) > 1 else 0.5
        preferences[variant] = Preference(likability=2.4 + 1.2 * level, novelty=2.2 + 1.6 * level,
                                          human=0.35 + 0.3 * level, strength=1.2 * level)
    return preferences | {CONTROL: CONTROL_PREFERENCE}


def _logit(probability: float) -> float:
    return math.log(probability / (1 - probability))


def _sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def _rating(rng: random.Random, mean: float) -> int:
    return int(min(5, max(1, round(mean + rng.gauss(0, 0.6)))))


def simulate(study_dir: str | Path, raters: int, preferences: dict[str, Preference] | None = None, seed: int = 0,
             novelty_weight: float = 0.6) -> int:
    """Let ``raters`` simulated raters take the study to the end; returns the number of answers written."""
    study_dir = Path(study_dir)
    config = load_study_config(study_dir / CONFIG_NAME)
    preferences = preferences or default_preferences(list(config.variants))
    plan = AssignmentPlan(config.ratings_per_rater, config.pairs_per_rater, config.pair_controls)
    rng = random.Random(seed)
    connection = open_database(study_dir / DATABASE_NAME)
    # Simulated answers can be made again: skip the wait for the disk on every commit (WAL with NORMAL sync is
    # still consistent after a crash; only the last commits could be lost to a power cut).
    connection.execute("PRAGMA synchronous = NORMAL")
    try:
        study_items = {item.id: item for item in items(connection)}
        missing = {item.variant for item in study_items.values()} - set(preferences)
        if missing:
            raise ValueError(f"no simulated preference for {sorted(missing)}")
        scores = np.array([item.novelty_nn for item in study_items.values() if item.novelty_nn is not None])
        centre, spread = (scores.mean(), scores.std() or 1.0) if len(scores) else (0.0, 1.0)
        quality, novelty = {}, {}
        for item_id in sorted(study_items):
            item = study_items[item_id]
            quality[item_id] = rng.gauss(0, 0.5)
            if item.novelty_nn is not None:
                novelty[item_id] = novelty_weight * (item.novelty_nn - centre) / spread + rng.gauss(0, 0.3)
            else:
                novelty[item_id] = rng.gauss(0, 0.5)
        clock = 1_700_000_000.0
        written = 0
        for index in range(raters):
            rater_id = f"sim{seed}-{index:05d}"
            add_rater(connection, rater_id)
            leniency, curiosity, trust = rng.gauss(0, 0.4), rng.gauss(0, 0.4), rng.gauss(0, 0.5)
            assignment = next_assignment(connection, rater_id, plan, rng, now=clock)
            while assignment is not None:
                clock += rng.lognormvariate(math.log(4.0), 0.4)
                first = study_items[assignment.item_a]
                if assignment.task == "rate":
                    preference = preferences[first.variant]
                    human = _sigmoid(_logit(preference.human) + trust + 0.5 * quality[first.id])
                    answer = Answer(likability=_rating(rng, preference.likability + quality[first.id] + leniency),
                                    novelty=_rating(rng, preference.novelty + novelty[first.id] + curiosity),
                                    origin="human" if rng.random() < human else "computer")
                else:
                    second = study_items[assignment.item_b]
                    margin = (preferences[first.variant].strength - preferences[second.variant].strength
                              + 0.5 * (quality[first.id] - quality[second.id]))
                    answer = Answer(preferred=first.id if rng.random() < _sigmoid(margin) else second.id)
                written += answer_and_assign_next(connection, assignment, answer, plan, rng, now=clock)
                assignment = open_assignment(connection, rater_id)
    finally:
        connection.close()
    return written
