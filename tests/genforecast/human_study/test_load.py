"""A bounded load test: 50 concurrent raters x 40 answers against a real server process on 127.0.0.1.

Checks that no answer is lost or duplicated and every stored answer has its rater's item and values; prints the
throughput and latencies (for the docs), asserting nothing about time. The figures in docs/human_study.md come from

    WANDB_MODE=disabled .venv/bin/python -m pytest tests/genforecast/human_study/test_load.py -s
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from human_study_helpers import answer_for, hidden_fields, start_server_process, synthetic_study, task_of

RATERS = 50
ANSWERS_PER_RATER = 40


async def one_rater(url: str, number: int, answers: int, timings: dict[str, list[float]]) -> list[tuple]:
    """Consent, then answer ``answers`` tasks; returns (assignment id, task, values) for every acknowledged answer."""
    rng = np.random.default_rng(number)
    acknowledged = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        page = await client.get("/")
        response = await client.post("/consent", data={"csrf": hidden_fields(page.text)["csrf"], "agree": "yes"})
        assert response.status_code == 303
        for _ in range(answers):
            start = time.perf_counter()
            page = await client.get("/rate")
            timings["page"].append(time.perf_counter() - start)
            task = task_of(page.text)
            assert task != "done"
            form, values = hidden_fields(page.text), answer_for(task, rng)
            start = time.perf_counter()
            response = await client.post("/answer", data={**form, **values})
            timings["answer"].append(time.perf_counter() - start)
            assert response.status_code == 303, response.text
            acknowledged.append((int(form["assignment"]), task, values))
        assert task_of((await client.get("/rate")).text) == "done"
    return acknowledged


async def all_raters(url: str) -> tuple[list[list[tuple]], dict[str, list[float]], float]:
    timings: dict[str, list[float]] = {"page": [], "answer": []}
    start = time.perf_counter()
    results = await asyncio.gather(*(one_rater(url, number, ANSWERS_PER_RATER, timings) for number in range(RATERS)))
    return results, timings, time.perf_counter() - start


def test_fifty_concurrent_raters_lose_and_duplicate_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    study = synthetic_study(tmp_path / "study", per_variant=10, controls=10, ratings_per_rater=30, pairs_per_rater=10)
    process, url = start_server_process(study)
    try:
        results, timings, wall = asyncio.run(all_raters(url))
    finally:
        process.terminate()
        process.wait(10)

    connection = sqlite3.connect(study / "study.sqlite")
    stored = {row[0]: row[1:] for row in connection.execute(
        "SELECT ans.assignment_id, ans.rater_id, a.rater_id, a.task, ans.likability, ans.novelty, ans.origin, "
        "ans.preferred, a.item_a, a.item_b FROM answers ans JOIN assignments a ON a.id = ans.assignment_id")}
    distinct_tasks = connection.execute("SELECT COUNT(DISTINCT a.rater_id || a.task || a.item_key) FROM answers ans "
                                        "JOIN assignments a ON a.id = ans.assignment_id").fetchone()[0]
    per_item = Counter(row[0] for row in connection.execute("SELECT item_a FROM assignments WHERE task = 'rate'"))
    connection.close()

    acknowledged = [answer for rater in results for answer in rater]
    answer_ms, page_ms = np.array(timings["answer"]) * 1000, np.array(timings["page"]) * 1000
    with capsys.disabled():
        print(f"\nload test: {RATERS} concurrent raters x {ANSWERS_PER_RATER} answers = {len(acknowledged)} answers "
              f"in {wall:.1f} s: {len(acknowledged) / wall:.0f} answers/s; POST /answer latency p50 "
              f"{np.percentile(answer_ms, 50):.0f} ms, p95 {np.percentile(answer_ms, 95):.0f} ms; GET /rate p50 "
              f"{np.percentile(page_ms, 50):.0f} ms, p95 {np.percentile(page_ms, 95):.0f} ms; ratings per image "
              f"{min(per_item.values())}-{max(per_item.values())}; {len(stored)} answers stored")
    assert len(acknowledged) == RATERS * ANSWERS_PER_RATER
    assert len(stored) == len(acknowledged) == len({answer[0] for answer in acknowledged})  # none lost or doubled
    assert distinct_tasks == len(stored)  # no rater answered one item (or pair) twice
    raters = {row[0] for row in stored.values()}
    assert len(raters) == RATERS
    for rater_answers in results:
        owners = {stored[assignment_id][0] for assignment_id, _, _ in rater_answers}
        assert len(owners) == 1  # each client's answers belong to one rater id...
        for assignment_id, task, values in rater_answers:
            rater_id, assignment_rater, stored_task, likability, novelty, origin, preferred, item_a, item_b = (
                stored[assignment_id])
            assert rater_id == assignment_rater and stored_task == task  # ...the one the task was given to
            if task == "rate":
                assert (likability, novelty, origin) == (int(values["likability"]), int(values["novelty"]),
                                                         values["origin"])
            else:
                assert preferred == (item_a if values["choice"] == "left" else item_b)
    # 1500 ratings over 40 images (37.5 each): least-rated first, but a rater near the end of its 30 may have
    # seen every least-rated image already and take the next one.
    assert max(per_item.values()) - min(per_item.values()) <= 2
