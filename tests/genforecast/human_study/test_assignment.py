"""Assignment: every item reaches its target with balance across groups, random order, never twice, resume."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from human_study_helpers import synthetic_study

from genforecast.human_study import storage
from genforecast.human_study.assignment import AssignmentPlan, next_assignment
from genforecast.human_study.config import CONTROL


@pytest.fixture
def connection(tmp_path: Path) -> sqlite3.Connection:
    study = synthetic_study(tmp_path / "study", per_variant=10, controls=10)
    connection = storage.open_database(study / "study.sqlite")
    connection.execute("PRAGMA synchronous = NORMAL")  # durability is not under test here: skip the disk waits
    yield connection
    connection.close()


def take(connection: sqlite3.Connection, rater: str, plan: AssignmentPlan, rng: random.Random,
         now: float = 1000.0) -> list[storage.Assignment]:
    """Let a new rater answer every task it is given (answers are not what is under test here)."""
    storage.add_rater(connection, rater)
    done = []
    while (assignment := next_assignment(connection, rater, plan, rng, now=now)) is not None:
        answer = (storage.Answer(likability=3, novelty=3, origin="human") if assignment.task == "rate"
                  else storage.Answer(preferred=assignment.item_a))
        storage.record_answer(connection, assignment, answer, now=now)
        done.append(assignment)
    return done


def variants_of(connection: sqlite3.Connection) -> dict[str, str]:
    return {item.id: item.variant for item in storage.items(connection)}


def test_every_item_reaches_its_target_with_groups_in_balance(connection: sqlite3.Connection) -> None:
    plan = AssignmentPlan(ratings_per_rater=10, pairs_per_rater=0)
    rng = random.Random(0)
    checkpoints = []
    for rater in range(20):  # 200 ratings over 40 items: exactly 5 each
        take(connection, f"r{rater}", plan, rng)
        loads = Counter(row[0] for row in connection.execute("SELECT item_a FROM assignments"))
        counts = [loads.get(item, 0) for item in variants_of(connection)]
        checkpoints.append(max(counts) - min(counts))
    assert max(checkpoints) <= 1  # at every point, no item is more than one rating ahead of another
    variant = variants_of(connection)
    per_group = Counter(variant[row[0]] for row in connection.execute("SELECT item_a FROM assignments"))
    assert per_group == {"gan": 50, "can": 50, "canh": 50, CONTROL: 50}
    assert set(Counter(row[0] for row in connection.execute("SELECT item_a FROM assignments")).values()) == {5}


def test_no_rater_sees_an_item_or_a_pair_twice_and_orders_differ(connection: sqlite3.Connection) -> None:
    plan = AssignmentPlan(ratings_per_rater=40, pairs_per_rater=30)
    rng = random.Random(1)
    sequences = []
    for rater in range(4):
        tasks = take(connection, f"r{rater}", plan, rng)
        rated = [task.item_a for task in tasks if task.task == "rate"]
        pairs = [frozenset((task.item_a, task.item_b)) for task in tasks if task.task == "pair"]
        assert len(rated) == len(set(rated)) == 40  # every item, each once
        assert len(pairs) == len(set(pairs)) == 30
        assert [task.position for task in tasks] == list(range(70))
        sequences.append(rated)
    assert len({tuple(sequence) for sequence in sequences}) == 4  # randomised per rater


def test_pairs_cover_variant_pairs_uniformly_left_right_at_random_and_skip_controls(
        connection: sqlite3.Connection) -> None:
    plan = AssignmentPlan(ratings_per_rater=0, pairs_per_rater=15)
    rng = random.Random(2)
    variant = variants_of(connection)
    level_pairs, left_first = Counter(), Counter()
    for rater in range(4):
        for task in take(connection, f"r{rater}", plan, rng):
            level_pairs[frozenset((variant[task.item_a], variant[task.item_b]))] += 1
            left_first[variant[task.item_a] < variant[task.item_b]] += 1
    assert sorted(level_pairs.values()) == [20, 20, 20]  # gan-can, gan-canh, can-canh, 60 pairs in all
    assert all(CONTROL not in pair and len(pair) == 2 for pair in level_pairs)
    assert left_first[True] > 10 and left_first[False] > 10


def test_controls_join_the_pairs_when_asked(connection: sqlite3.Connection) -> None:
    plan = AssignmentPlan(ratings_per_rater=0, pairs_per_rater=12, pair_controls=True)
    variant = variants_of(connection)
    tasks = take(connection, "r0", plan, random.Random(3))
    levels = Counter(frozenset((variant[task.item_a], variant[task.item_b])) for task in tasks)
    assert len(levels) == 6 and set(levels.values()) == {2}


def test_an_open_task_is_resumed_not_replaced(connection: sqlite3.Connection) -> None:
    plan = AssignmentPlan(ratings_per_rater=5, pairs_per_rater=2)
    storage.add_rater(connection, "r0")
    first = next_assignment(connection, "r0", plan, random.Random(4))
    assert next_assignment(connection, "r0", plan, random.Random(5)).id == first.id  # a reload, a second tab
    storage.record_answer(connection, first, storage.Answer(likability=1, novelty=1, origin="computer"))
    second = next_assignment(connection, "r0", plan, random.Random(6))
    assert second.id != first.id and second.position == 1


def test_a_rater_who_rated_everything_moves_on_to_pairs_then_finishes(connection: sqlite3.Connection) -> None:
    plan = AssignmentPlan(ratings_per_rater=100, pairs_per_rater=3)
    tasks = take(connection, "r0", plan, random.Random(7))
    assert Counter(task.task for task in tasks) == {"rate": 40, "pair": 3}
    assert next_assignment(connection, "r0", plan) is None


def test_abandoned_tasks_stop_holding_their_items_after_the_stale_time(connection: sqlite3.Connection) -> None:
    plan = AssignmentPlan(ratings_per_rater=1, pairs_per_rater=0, stale_after_s=600)
    storage.add_rater(connection, "leaver")
    abandoned = next_assignment(connection, "leaver", plan, random.Random(8), now=0.0)
    fresh_raters = [f"r{i}" for i in range(39)]
    for rater in fresh_raters:  # while the leaver's task is fresh, the 39 others get (and rate) the 39 others
        storage.add_rater(connection, rater)
        task = next_assignment(connection, rater, plan, random.Random(9), now=100.0)
        assert task.item_a != abandoned.item_a
        storage.record_answer(connection, task, storage.Answer(likability=2, novelty=2, origin="human"), now=100.0)
    storage.add_rater(connection, "late")
    late = next_assignment(connection, "late", plan, random.Random(10), now=10_000.0)
    assert late.item_a == abandoned.item_a  # stale now: the least-rated item again
