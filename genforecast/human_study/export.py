"""Exports of every raw answer, one row each (columns: :data:`storage.ANSWER_COLUMNS`), as CSV or JSON.

The rows join each answer with its assignment and items, so an export names the variants (it is for the
researcher, behind the admin token or on the study's own machine, never shown to raters). No rater writes free
text, so every exported value is an id, a number or a fixed word.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from genforecast.human_study.storage import ANSWER_COLUMNS, all_answers, open_database


def answers_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(ANSWER_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def export_answers(database: str | Path, out: str | Path, fmt: str = "csv") -> int:
    """Write every answer of ``database`` to ``out`` as ``csv`` or ``json``; returns the number of answers."""
    connection = open_database(database)
    try:
        rows = all_answers(connection)
    finally:
        connection.close()
    if fmt == "csv":
        text = answers_csv(rows)
    elif fmt == "json":
        text = json.dumps(rows, indent=1)
    else:
        raise ValueError(f"format must be csv or json, got {fmt!r}")
    Path(out).write_text(text)
    return len(rows)
