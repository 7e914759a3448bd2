"""Who sees what: balanced, randomised, never-twice assignment of rating and pairwise tasks.

Contract of :func:`next_assignment`, per rater:

* **Resume**: while the rater has an unanswered assignment, that same assignment is returned (a closed tab, a
  reload or a second tab all land on the same task), so nothing is skipped and nothing is handed out twice.
* **Order**: first ``ratings_per_rater`` rating tasks, then ``pairs_per_rater`` pairwise tasks; then None (done).
  A rater who has rated every item moves on to the pairs early.
* **Never twice**: an item is never rated twice by a rater, and a pair (in either order) is never shown twice to a
  rater (also enforced by a unique key in the database).
* **Balance**: the next item is one with the fewest ratings so far (answered, or assigned within
  ``stale_after_s`` and not yet answered), so every item reaches ``ratings_per_item`` before any item gets much
  more; among those, the group (variant or controls) with the fewest ratings per item goes first, and the item
  within it is drawn at random. Real images (controls) are items like the others, so they are mixed in at their
  share of the study. Pairs cycle through the variant pairs uniformly (adaptive pairing biases Bradley-Terry
  fits), each side being one of the variant's least-paired images, and left/right is drawn at random.
* Each choice runs in one ``BEGIN IMMEDIATE`` transaction, so concurrent requests never pick from a stale count.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations

from genforecast.human_study.config import CONTROL
from genforecast.human_study.storage import Answer, Assignment, get_assignment, insert_answer, transaction

DEFAULT_STALE_AFTER_S = 1800.0
"""An unanswered assignment older than this no longer counts towards its item's load (the rater left)."""


@dataclass(frozen=True)
class AssignmentPlan:
    """How many tasks of each kind a rater gets (from the study file), and when an open task stops counting."""

    ratings_per_rater: int
    pairs_per_rater: int
    pair_controls: bool = False
    stale_after_s: float = DEFAULT_STALE_AFTER_S


def next_assignment(connection: sqlite3.Connection, rater_id: str, plan: AssignmentPlan,
                    rng: random.Random | None = None, now: float | None = None) -> Assignment | None:
    """The rater's current task: the open one if any, else a new one (see the module docstring); None when done."""
    # Most calls find the open task: a plain read, without taking the write lock.
    current = open_assignment(connection, rater_id)
    if current is not None:
        return current
    with transaction(connection):
        return assign_next(connection, rater_id, plan, rng, now)


def answer_and_assign_next(connection: sqlite3.Connection, assignment: Assignment, answer: Answer,
                           plan: AssignmentPlan, rng: random.Random | None = None, now: float | None = None) -> bool:
    """Store an answer and make the rater's next task in one transaction, committed before returning.

    One commit per answer instead of two: with ``synchronous=FULL`` each commit waits for the disk. Returns what
    :func:`insert_answer` returns (False for an idempotent repeat).
    """
    with transaction(connection):
        stored = insert_answer(connection, assignment, answer, now)
        assign_next(connection, assignment.rater_id, plan, rng, now)
    return stored


def assign_next(connection: sqlite3.Connection, rater_id: str, plan: AssignmentPlan,
                rng: random.Random | None = None, now: float | None = None) -> Assignment | None:
    """Inside the caller's write transaction: the open task, or a newly made one, or None when the rater is done."""
    rng = rng or random.SystemRandom()
    now = time.time() if now is None else now
    current = open_assignment(connection, rater_id)  # another tab may have made one meanwhile
    if current is not None:
        return current
    done = dict(connection.execute("SELECT task, COUNT(*) FROM assignments WHERE rater_id = ? GROUP BY task",
                                   (rater_id,)).fetchall())
    position = sum(done.values())
    cutoff = now - plan.stale_after_s
    chosen: tuple[str, str, str | None] | None = None
    if done.get("rate", 0) < plan.ratings_per_rater:
        item = _choose_item(connection, rater_id, cutoff, rng)
        chosen = ("rate", item, None) if item is not None else None
    if chosen is None and done.get("pair", 0) < plan.pairs_per_rater:
        pair = _choose_pair(connection, rater_id, cutoff, plan.pair_controls, rng)
        chosen = ("pair", *pair) if pair is not None else None
    if chosen is None:
        return None
    task, item_a, item_b = chosen
    key = item_a if item_b is None else "|".join(sorted((item_a, item_b)))
    cursor = connection.execute(
        "INSERT INTO assignments (rater_id, position, task, item_a, item_b, item_key, created_at, shown_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (rater_id, position, task, item_a, item_b, key, now, now))
    return get_assignment(connection, cursor.lastrowid)


def open_assignment(connection: sqlite3.Connection, rater_id: str) -> Assignment | None:
    """The rater's first unanswered assignment, if any."""
    row = connection.execute(
        "SELECT a.id FROM assignments a LEFT JOIN answers ans ON ans.assignment_id = a.id "
        "WHERE a.rater_id = ? AND ans.assignment_id IS NULL ORDER BY a.position LIMIT 1", (rater_id,)).fetchone()
    return get_assignment(connection, row["id"]) if row is not None else None


def _live_load(task: str, column: str) -> str:
    """SQL: per item, the assignments of ``task`` naming it in ``column`` that are answered or still fresh."""
    return (f"SELECT a.{column} AS item, COUNT(*) AS load FROM assignments a "
            f"LEFT JOIN answers ans ON ans.assignment_id = a.id "
            f"WHERE a.task = '{task}' AND (ans.assignment_id IS NOT NULL OR a.created_at >= :cutoff) "
            f"GROUP BY a.{column}")


def _choose_item(connection: sqlite3.Connection, rater_id: str, cutoff: float, rng: random.Random) -> str | None:
    rows = connection.execute(
        f"SELECT i.id, i.variant, COALESCE(l.load, 0) AS load, "
        f"       i.id IN (SELECT item_a FROM assignments WHERE rater_id = :rater AND task = 'rate') AS seen "
        f"FROM items i LEFT JOIN ({_live_load('rate', 'item_a')}) l ON l.item = i.id",
        {"rater": rater_id, "cutoff": cutoff}).fetchall()
    group_load: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        group_load[row["variant"]].append(row["load"])
    candidates = [row for row in rows if not row["seen"]]
    if not candidates:
        return None
    least = min(row["load"] for row in candidates)
    pool = [row for row in candidates if row["load"] == least]
    per_item = {variant: sum(loads) / len(loads) for variant, loads in group_load.items()}
    variants = sorted({row["variant"] for row in pool})
    lightest = min(per_item[variant] for variant in variants)
    variant = rng.choice([variant for variant in variants if per_item[variant] == lightest])
    return rng.choice(sorted(row["id"] for row in pool if row["variant"] == variant))


def _choose_pair(connection: sqlite3.Connection, rater_id: str, cutoff: float, pair_controls: bool,
                 rng: random.Random) -> tuple[str, str] | None:
    params = {"cutoff": cutoff}
    loads = dict(connection.execute(
        f"SELECT item, SUM(load) FROM ({_live_load('pair', 'item_a')} UNION ALL {_live_load('pair', 'item_b')}) "
        f"GROUP BY item", params).fetchall())
    by_variant: dict[str, list[str]] = defaultdict(list)
    for row in connection.execute("SELECT id, variant FROM items ORDER BY id"):
        if row["variant"] != CONTROL or pair_controls:
            by_variant[row["variant"]].append(row["id"])
    level_load: dict[tuple[str, str], int] = defaultdict(int)
    for row in connection.execute(
            "SELECT ia.variant AS va, ib.variant AS vb FROM assignments a LEFT JOIN answers ans "
            "ON ans.assignment_id = a.id JOIN items ia ON ia.id = a.item_a JOIN items ib ON ib.id = a.item_b "
            "WHERE a.task = 'pair' AND (ans.assignment_id IS NOT NULL OR a.created_at >= :cutoff)", params):
        level_load[tuple(sorted((row["va"], row["vb"])))] += 1
    seen = {row[0] for row in connection.execute(
        "SELECT item_key FROM assignments WHERE rater_id = ? AND task = 'pair'", (rater_id,))}
    level_pairs = list(combinations(sorted(by_variant), 2))
    rng.shuffle(level_pairs)
    level_pairs.sort(key=lambda pair: level_load[pair])

    def least_paired_first(ids: list[str]) -> list[str]:
        shuffled = list(ids)
        rng.shuffle(shuffled)
        return sorted(shuffled, key=lambda item: loads.get(item, 0))

    for first, second in level_pairs:
        for left in least_paired_first(by_variant[first]):
            for right in least_paired_first(by_variant[second]):
                if "|".join(sorted((left, right))) not in seen:
                    return (left, right) if rng.random() < 0.5 else (right, left)
    return None
