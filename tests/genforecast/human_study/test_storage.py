"""Storage: WAL, a versioned schema, answers committed before the reply, a killed server loses nothing committed,
and one server per study."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from human_study_helpers import (
    answer_for,
    hidden_fields,
    join,
    starlette_test_client,
    start_server_process,
    synthetic_study,
    task_of,
)

from genforecast.human_study import app as app_module
from genforecast.human_study import storage
from genforecast.human_study.app import create_app
from genforecast.human_study.assignment import AssignmentPlan, next_assignment
from genforecast.human_study.cli import main as human_study_main

TestClient = starlette_test_client()


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return synthetic_study(tmp_path / "study", per_variant=6, controls=6, ratings_per_rater=12, pairs_per_rater=4)


def test_database_is_wal_with_full_sync_and_the_current_schema_version(study: Path) -> None:
    raw = sqlite3.connect(study / "study.sqlite")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent: set once, seen by everyone
    assert raw.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION
    raw.close()
    connection = storage.open_database(study / "study.sqlite")
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    connection.close()


def test_newer_and_foreign_databases_are_refused(tmp_path: Path, study: Path) -> None:
    raw = sqlite3.connect(study / "study.sqlite")
    raw.execute(f"PRAGMA user_version = {storage.SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(storage.SchemaError, match="newer"):
        storage.open_database(study / "study.sqlite")
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(storage.SchemaError, match="not a genforecast study"):
        storage.open_database(tmp_path / "other.sqlite")


def test_older_databases_are_migrated_in_place(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def add_comment_column(connection: sqlite3.Connection) -> None:
        connection.execute("ALTER TABLE raters ADD COLUMN comment TEXT")

    monkeypatch.setattr(storage, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(storage.MIGRATIONS, 1, add_comment_column)
    connection = storage.open_database(study / "study.sqlite")
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 2
    assert "comment" in [row[1] for row in connection.execute("PRAGMA table_info(raters)")]
    connection.close()


def test_an_answer_is_committed_before_the_reply(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen_by_others: list[int] = []
    original = app_module.answer_and_assign_next

    def record_then_look_from_another_connection(*args: object, **kwargs: object) -> bool:
        stored = original(*args, **kwargs)
        other = sqlite3.connect(study / "study.sqlite")  # not the server's connection: sees committed data only
        seen_by_others.append(other.execute("SELECT COUNT(*) FROM answers").fetchone()[0])
        other.close()
        return stored

    monkeypatch.setattr(app_module, "answer_and_assign_next", record_then_look_from_another_connection)
    with TestClient(create_app(study)) as client:
        join(client)
        form = hidden_fields(client.get("/rate").text)
        response = client.post("/answer", data={**form, "likability": "4", "novelty": "2", "origin": "human"},
                               follow_redirects=False)
    assert response.status_code == 303
    assert seen_by_others == [1]


def test_a_killed_server_loses_no_committed_answer_and_raters_resume(study: Path) -> None:
    """SIGKILL the server while eight raters are answering: every answer the server acknowledged (303) is in the
    database with its values, the database is intact, and after a restart each rater continues with its next task."""
    process, url = start_server_process(study)
    acknowledged: dict[str, list[tuple[int, dict[str, str]]]] = {}
    cookies: dict[str, httpx.Cookies] = {}
    lock = threading.Lock()
    enough = threading.Event()
    errors: list[BaseException] = []

    def rater(number: int) -> None:
        try:
            answer_until_the_server_dies(number)
        except BaseException as error:  # a failed thread must fail the test
            errors.append(error)
            enough.set()

    def answer_until_the_server_dies(number: int) -> None:
        rng = np.random.default_rng(number)
        with httpx.Client(base_url=url, timeout=10) as client:
            join(client)
            with lock:
                cookies[f"rater{number}"] = client.cookies
                acknowledged[f"rater{number}"] = []
            try:
                while True:
                    page = client.get("/rate")
                    task = task_of(page.text)
                    if task == "done":
                        return
                    form = hidden_fields(page.text)
                    values = answer_for(task, rng)
                    response = client.post("/answer", data={**form, **values}, follow_redirects=False)
                    assert response.status_code == 303
                    with lock:
                        acknowledged[f"rater{number}"].append((int(form["assignment"]), values))
                        if sum(map(len, acknowledged.values())) >= 40:
                            enough.set()
            except httpx.TransportError:
                return  # the server is gone

    threads = [threading.Thread(target=rater, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    assert enough.wait(60), "the raters did not get 40 answers through"
    assert not errors, errors
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    connection = sqlite3.connect(study / "study.sqlite")
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {row[0]: row[1:] for row in connection.execute(
        "SELECT assignment_id, rater_id, likability, novelty, origin, preferred FROM answers")}
    connection.close()
    total = sum(map(len, acknowledged.values()))
    assert total >= 40
    for answers in acknowledged.values():
        for assignment_id, values in answers:
            assert assignment_id in stored
            if "likability" in values:
                assert stored[assignment_id][1:4] == (int(values["likability"]), int(values["novelty"]),
                                                      values["origin"])
    # Answers committed whose reply was lost in the kill are kept too: at most one per rater.
    assert len(stored) - total <= len(acknowledged)

    process, url = start_server_process(study)  # the kernel released the dead server's lock
    try:
        for name, jar in cookies.items():
            with httpx.Client(base_url=url, cookies=jar, timeout=10) as client:
                page = client.get("/rate")
                assert page.status_code == 200
                if task_of(page.text) != "done":
                    connection = storage.open_database(study / "study.sqlite")
                    assignment = storage.get_assignment(connection, int(hidden_fields(page.text)["assignment"]))
                    answered = connection.execute("SELECT COUNT(*) FROM answers WHERE rater_id = ?",
                                                  (assignment.rater_id,)).fetchone()[0]
                    connection.close()
                    assert assignment.id not in stored and assignment.position == answered, name
    finally:
        process.terminate()
        process.wait(10)


def test_a_second_server_on_the_same_study_is_refused(study: Path, capsys: pytest.CaptureFixture) -> None:
    with storage.ServerLock(study):
        assert human_study_main(["serve", str(study), "--port", "0"]) == 2
        assert "already being served" in capsys.readouterr().err
        with pytest.raises(storage.StudyInUse):
            storage.ServerLock(study).acquire()
    storage.ServerLock(study).acquire().release()  # free again once the first one stops


def test_concurrent_writers_on_one_database_stay_consistent(study: Path) -> None:
    """Two processes' worth of connections asking for the same rater's next task at once: one assignment."""
    connection = storage.open_database(study / "study.sqlite")
    storage.add_rater(connection, "shared")
    connection.close()
    plan = AssignmentPlan(ratings_per_rater=12, pairs_per_rater=4)
    results: list[int] = []

    def ask() -> None:
        own = storage.open_database(study / "study.sqlite")
        results.append(next_assignment(own, "shared", plan).id)
        own.close()

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    with pytest.raises(sqlite3.IntegrityError):  # the schema itself forbids rating an item twice
        raw = storage.open_database(study / "study.sqlite")
        item = raw.execute("SELECT item_a FROM assignments").fetchone()[0]
        raw.execute("INSERT INTO assignments (rater_id, position, task, item_a, item_key, created_at) "
                    "VALUES ('shared', 5, 'rate', ?, ?, ?)", (item, item, time.time()))
