"""The study database: SQLite in WAL mode, a versioned schema, one writer lock per serving process.

Contracts:

* Every write is one transaction committed before the call returns (``synchronous=FULL``: a committed answer
  survives a killed process and a power cut), so the web app commits an answer before it answers the request.
* The schema version is SQLite's ``user_version``. A database from an older version is migrated in place by
  :data:`MIGRATIONS`; one from a newer version is refused rather than misread.
* Queries are parametrised, never formatted from input.
* Never-twice and idempotency are enforced by the schema itself (unique keys), not only by the code paths:
  an assignment is unique per (rater, task, item key) and an answer per assignment.
* Two servers on one database: :class:`ServerLock` (an exclusive ``flock`` on ``server.lock`` in the study folder)
  refuses the second one. Other writers (``simulate``, a second process) stay safe because every read-modify-write
  runs in a ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
DATABASE_NAME = "study.sqlite"
LOCK_NAME = "server.lock"

SCHEMA_V1 = """
CREATE TABLE items (
    id TEXT PRIMARY KEY,                       -- random token: the only name a rater's browser ever sees
    kind TEXT NOT NULL CHECK (kind IN ('generated', 'control')),
    variant TEXT NOT NULL,                     -- the variant, or 'control' for real catalogue images
    file TEXT NOT NULL UNIQUE,                 -- path relative to the study folder
    sha256 TEXT NOT NULL UNIQUE,               -- of the pixels: the deduplication key
    novelty_nn REAL,                           -- nearest-neighbour distance to the catalogue (classifier space)
    shape_entropy REAL,
    texture_entropy REAL,
    source TEXT                                -- generation index or catalogue file, for the manifest
);
CREATE TABLE raters (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE assignments (
    id INTEGER PRIMARY KEY,
    rater_id TEXT NOT NULL REFERENCES raters(id),
    position INTEGER NOT NULL,                 -- 0, 1, ... in the rater's order
    task TEXT NOT NULL CHECK (task IN ('rate', 'pair')),
    item_a TEXT NOT NULL REFERENCES items(id), -- the rated item, or the left one of a pair
    item_b TEXT REFERENCES items(id),          -- the right one of a pair
    item_key TEXT NOT NULL,                    -- item id, or the two pair ids sorted: never twice per rater
    created_at REAL NOT NULL,
    shown_at REAL,                             -- first shown (= created: a task is made when a page needs it)
    UNIQUE (rater_id, position),
    UNIQUE (rater_id, task, item_key),
    CHECK ((task = 'rate') = (item_b IS NULL))
);
CREATE INDEX assignments_item_a ON assignments (task, item_a);
CREATE INDEX assignments_item_b ON assignments (task, item_b);
CREATE TABLE answers (
    assignment_id INTEGER PRIMARY KEY REFERENCES assignments(id),
    rater_id TEXT NOT NULL REFERENCES raters(id),
    likability INTEGER CHECK (likability BETWEEN 1 AND 5),
    novelty INTEGER CHECK (novelty BETWEEN 1 AND 5),
    origin TEXT CHECK (origin IN ('human', 'computer')),
    preferred TEXT REFERENCES items(id),
    response_ms INTEGER NOT NULL,              -- server clock: page first shown -> answer received
    client_ms INTEGER,                         -- the page's own clock, when it sent one
    answered_at REAL NOT NULL
);
CREATE TABLE study_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}
"""``MIGRATIONS[v]`` upgrades a version ``v`` database to ``v + 1`` inside one transaction."""


class SchemaError(RuntimeError):
    """The database is not a study database this version can read."""


class StudyInUse(RuntimeError):
    """Another process is serving this study."""


@dataclass(frozen=True)
class Item:
    """One image of the study."""

    id: str
    kind: str
    variant: str
    file: str
    sha256: str
    novelty_nn: float | None = None
    shape_entropy: float | None = None
    texture_entropy: float | None = None
    source: str | None = None


@dataclass(frozen=True)
class Assignment:
    """One task given to one rater: rate ``item_a``, or choose between ``item_a`` (left) and ``item_b`` (right)."""

    id: int
    rater_id: str
    position: int
    task: str
    item_a: str
    item_b: str | None
    created_at: float
    shown_at: float | None


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the database with the settings every connection must have (WAL, FULL sync, foreign keys, waits).

    ``isolation_level=None``: transactions are explicit (:func:`transaction`), so nothing stays open by accident.
    """
    connection = sqlite3.connect(str(path), isolation_level=None, timeout=30.0, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA busy_timeout = 30000")
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise SchemaError(f"{path}: could not switch to WAL journaling (got {mode}); is it on a network drive?")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


_PROCESS_WRITE_LOCK = threading.Lock()


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error): takes the write lock up front, so a
    read-then-write (e.g. choosing the least-rated item) cannot interleave with another writer.

    Writers of one process queue on a Python lock first: a waiting thread then wakes as soon as the previous
    commit is done, instead of in SQLite's busy handler, which polls with sleeps of up to 100 ms (that made the
    95th-percentile latency of 50 concurrent raters several times the median). SQLite's own lock still orders
    writers of different processes.
    """
    with _PROCESS_WRITE_LOCK:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")


def initialise(path: str | Path) -> sqlite3.Connection:
    """Create a new study database at ``path`` (which must not exist) with the current schema."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    connection = connect(path)
    # One script, one transaction: a half-created schema is never left behind (executescript would commit any
    # transaction opened around it, so the script carries its own).
    connection.executescript(f"BEGIN IMMEDIATE; {SCHEMA_V1} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
    return connection


def open_database(path: str | Path) -> sqlite3.Connection:
    """Open an existing study database, migrating an older schema and refusing a newer or foreign one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no study database at {path}: run `genforecast human-study create` first")
    connection = connect(path)
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        connection.close()
        raise SchemaError(f"{path} has schema version {version}, newer than this tool's {SCHEMA_VERSION}: "
                          "update genforecast")
    if version < 1:
        connection.close()
        raise SchemaError(f"{path} is not a genforecast study database (schema version {version})")
    while version < SCHEMA_VERSION:
        with transaction(connection):
            MIGRATIONS[version](connection)
            version += 1
            connection.execute(f"PRAGMA user_version = {version}")
    return connection


class Database:
    """Thread-safe access to one study database: one connection per thread, opened on first use.

    SQLite connections must not be shared by concurrent threads; the web server runs its handlers on a thread
    pool, so each pool thread keeps its own connection (they all see each other's commits through WAL).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        open_database(self.path).close()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @property
    def connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = open_database(self.path)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()


# ---- items and metadata --------------------------------------------------------------------------------------


def insert_items(connection: sqlite3.Connection, items: list[Item]) -> None:
    with transaction(connection):
        connection.executemany(
            "INSERT INTO items (id, kind, variant, file, sha256, novelty_nn, shape_entropy, texture_entropy, source)"
            " VALUES (:id, :kind, :variant, :file, :sha256, :novelty_nn, :shape_entropy, :texture_entropy, :source)",
            [item.__dict__ for item in items])


def set_meta(connection: sqlite3.Connection, values: dict[str, str]) -> None:
    with transaction(connection):
        connection.executemany("INSERT OR REPLACE INTO study_meta (key, value) VALUES (?, ?)", list(values.items()))


def get_meta(connection: sqlite3.Connection) -> dict[str, str]:
    return {row["key"]: row["value"] for row in connection.execute("SELECT key, value FROM study_meta")}


def items(connection: sqlite3.Connection) -> list[Item]:
    return [Item(**dict(row)) for row in connection.execute("SELECT * FROM items ORDER BY variant, id")]


def item_file(connection: sqlite3.Connection, item_id: str) -> str | None:
    """The study-relative file of an item, or None for an unknown id."""
    row = connection.execute("SELECT file FROM items WHERE id = ?", (item_id,)).fetchone()
    return row["file"] if row is not None else None


# ---- raters, assignments, answers ----------------------------------------------------------------------------


def add_rater(connection: sqlite3.Connection, rater_id: str) -> None:
    with transaction(connection):
        connection.execute("INSERT INTO raters (id, created_at) VALUES (?, ?)", (rater_id, time.time()))


def rater_exists(connection: sqlite3.Connection, rater_id: str) -> bool:
    return connection.execute("SELECT 1 FROM raters WHERE id = ?", (rater_id,)).fetchone() is not None


def _assignment(row: sqlite3.Row | None) -> Assignment | None:
    return Assignment(**{key: row[key] for key in row.keys() if key != "item_key"}) if row is not None else None


def get_assignment(connection: sqlite3.Connection, assignment_id: int) -> Assignment | None:
    return _assignment(connection.execute("SELECT * FROM assignments WHERE id = ?", (assignment_id,)).fetchone())


@dataclass(frozen=True)
class Answer:
    """The answer to one assignment: the three ratings (task ``rate``) or the preferred item id (task ``pair``)."""

    likability: int | None = None
    novelty: int | None = None
    origin: str | None = None
    preferred: str | None = None
    client_ms: int | None = None


class AnswerConflict(ValueError):
    """The assignment already has a different answer (an identical one is accepted as a repeat)."""


def insert_answer(connection: sqlite3.Connection, assignment: Assignment, answer: Answer,
                  now: float | None = None) -> bool:
    """Store ``answer`` for ``assignment`` inside the caller's transaction; True if stored now, False if the same
    answer was already there.

    A repeated submission of the same values is idempotent (a double click, a retried request); different values
    for an answered assignment raise :class:`AnswerConflict`. The caller checks that the assignment belongs to the
    rater and that the values are valid for its task; the schema's CHECKs are the last line of defence.
    """
    now = time.time() if now is None else now
    started = assignment.shown_at if assignment.shown_at is not None else assignment.created_at
    existing = connection.execute("SELECT likability, novelty, origin, preferred FROM answers "
                                  "WHERE assignment_id = ?", (assignment.id,)).fetchone()
    if existing is not None:
        if tuple(existing) == (answer.likability, answer.novelty, answer.origin, answer.preferred):
            return False
        raise AnswerConflict(f"assignment {assignment.id} already has a different answer")
    connection.execute(
        "INSERT INTO answers (assignment_id, rater_id, likability, novelty, origin, preferred, response_ms, "
        "client_ms, answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (assignment.id, assignment.rater_id, answer.likability, answer.novelty, answer.origin, answer.preferred,
         max(0, round((now - started) * 1000)), answer.client_ms, now))
    return True


def record_answer(connection: sqlite3.Connection, assignment: Assignment, answer: Answer,
                  now: float | None = None) -> bool:
    """:func:`insert_answer` in its own transaction, committed before returning."""
    with transaction(connection):
        return insert_answer(connection, assignment, answer, now)


ANSWER_COLUMNS = ("assignment_id", "rater_id", "position", "task", "item_a", "variant_a", "kind_a", "item_b",
                  "variant_b", "kind_b", "likability", "novelty", "origin", "preferred", "preferred_variant",
                  "response_ms", "client_ms", "shown_at", "answered_at")
"""The columns of :func:`all_answers` (and of the CSV/JSON exports), one row per answer."""


def all_answers(connection: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every answer joined with its assignment and items, in answer order."""
    rows = connection.execute("""
        SELECT ans.assignment_id, ans.rater_id, a.position, a.task,
               a.item_a, ia.variant AS variant_a, ia.kind AS kind_a,
               a.item_b, ib.variant AS variant_b, ib.kind AS kind_b,
               ans.likability, ans.novelty, ans.origin, ans.preferred, ip.variant AS preferred_variant,
               ans.response_ms, ans.client_ms, a.shown_at, ans.answered_at
        FROM answers ans
        JOIN assignments a ON a.id = ans.assignment_id
        JOIN items ia ON ia.id = a.item_a
        LEFT JOIN items ib ON ib.id = a.item_b
        LEFT JOIN items ip ON ip.id = ans.preferred
        ORDER BY ans.answered_at, ans.assignment_id""")
    return [dict(row) for row in rows]


def progress(connection: sqlite3.Connection, target: int) -> list[dict[str, Any]]:
    """Per group (variant or control): items, answered ratings, items at their ``target`` and pairwise answers."""
    rows = connection.execute("""
        SELECT i.variant, i.kind, COUNT(*) AS items,
               COALESCE(SUM(r.ratings), 0) AS ratings,
               COALESCE(SUM(CASE WHEN COALESCE(r.ratings, 0) >= ? THEN 1 ELSE 0 END), 0) AS items_at_target,
               COALESCE(SUM(p.pairs), 0) AS pair_answers
        FROM items i
        LEFT JOIN (SELECT a.item_a AS item, COUNT(*) AS ratings FROM answers ans
                   JOIN assignments a ON a.id = ans.assignment_id WHERE a.task = 'rate' GROUP BY a.item_a) r
               ON r.item = i.id
        LEFT JOIN (SELECT item, COUNT(*) AS pairs FROM (
                       SELECT a.item_a AS item FROM answers ans JOIN assignments a ON a.id = ans.assignment_id
                       WHERE a.task = 'pair'
                       UNION ALL
                       SELECT a.item_b FROM answers ans JOIN assignments a ON a.id = ans.assignment_id
                       WHERE a.task = 'pair') GROUP BY item) p
               ON p.item = i.id
        GROUP BY i.variant, i.kind ORDER BY i.kind DESC, i.variant""", (target,))
    return [dict(row) for row in rows]


def counts(connection: sqlite3.Connection) -> dict[str, int]:
    """Totals: raters, assignments, answers."""
    return {table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608 (fixed names)
            for table in ("raters", "assignments", "answers")}


# ---- the server lock -----------------------------------------------------------------------------------------


class ServerLock:
    """An exclusive, non-blocking ``flock`` on ``<study>/server.lock``, held while a server runs.

    The kernel drops the lock when the holder dies (even by SIGKILL), so a crashed server never blocks a restart.
    """

    def __init__(self, study_dir: str | Path) -> None:
        self.path = Path(study_dir) / LOCK_NAME
        self._handle: Any = None

    def acquire(self) -> ServerLock:
        handle = open(self.path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StudyInUse(f"{self.path.parent} is already being served ({holder}); stop that server first "
                             "(one study, one server: one link for raters, one place that assigns)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> ServerLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
