"""The result tables of the docs, written from the rows the studies saved: ``python -m genforecast.docs_tables``
(``make docs``).

Every study saves the rows of its table (``outputs/<family>/study/<run id>/results.json``, see
:func:`genforecast.study.publish_results`). The docs keep a copy of the measured demo rows in
``docs/results/<family>.json`` and show them in marked blocks::

    <!-- results:<table> -->
    | ... the table, as the study prints it ... |
    <!-- /results:<table> -->

This command rewrites every block from those files (:func:`genforecast.study.markdown_table`), so a table in the
docs is one a study wrote; with ``--from-studies`` it first copies each family's newest study rows into
``docs/results`` (families that have not run keep their file).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from genforecast.studies import fashion, framegan, segforecast
from genforecast.study import FORECAST_COLUMNS, STUDIES, Columns, Rows, markdown_table, read_rows


@dataclass(frozen=True)
class Table:
    """A results block: the doc page it is in, the families whose rows it shows (in order) and its columns."""

    page: str
    families: tuple[str, ...]
    columns: Columns


TABLES = {
    "fashion": Table("fashion.md", ("fashion",), fashion.COLUMNS),
    "framegan-moving": Table("framegan.md", ("framegan",), framegan.region_columns("moving")),
    "framegan-full": Table("framegan.md", ("framegan",), framegan.region_columns("full")),
    "segforecast": Table("segforecast.md", ("segforecast",), segforecast.COLUMNS),
    "f2f": Table("f2f.md", ("f2f",), FORECAST_COLUMNS),
    "joint": Table("joint.md", ("f2f", "joint"), FORECAST_COLUMNS),
}
"""Every results block of the docs by name; the joint table shows the F2F rows too, as the joint study prints it."""


def read_results(results: Path, families: Sequence[str]) -> Rows:
    """The rows of ``families`` saved in ``results/<family>.json``, in that order."""
    return [row for family in families for row in json.loads((results / f"{family}.json").read_text())]


def _block(name: str) -> re.Pattern[str]:
    name = re.escape(name)
    return re.compile(rf"(<!-- results:{name} -->\n)(?:.*?\n)?(<!-- /results:{name} -->)", re.DOTALL)


def with_table(text: str, name: str, table: str) -> str:
    """``text`` with the results block ``name`` holding ``table``; ``ValueError`` when the page has no such block."""
    block = _block(name)
    if not block.search(text):
        raise ValueError(f"no block <!-- results:{name} --> ... <!-- /results:{name} -->")
    return block.sub(lambda match: f"{match[1]}{table}\n{match[2]}", text)


def rendered_pages(docs: Path, results: Path) -> dict[Path, str]:
    """Every page with results blocks, as its blocks written from ``results`` make it."""
    pages: dict[Path, str] = {}
    for name, table in TABLES.items():
        page = docs / table.page
        text = pages.get(page, page.read_text())
        pages[page] = with_table(text, name, markdown_table(read_results(results, table.families), table.columns))
    return pages


def copy_study_rows(results: Path) -> list[str]:
    """Copy each family's newest study rows (:func:`genforecast.study.read_rows`) into ``results``; their families."""
    copied = []
    for family in STUDIES:
        rows = read_rows(family)
        if rows:
            (results / f"{family}.json").write_text(json.dumps(rows, indent=1) + "\n")
            copied.append(family)
    return copied


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genforecast.docs_tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="the docs folder")
    parser.add_argument("--from-studies", action="store_true",
                        help="first copy the newest study rows of each family (outputs/<family>/study/latest)")
    args = parser.parse_args(argv)
    results = args.docs / "results"
    if args.from_studies:
        print(f"copied the study rows of {', '.join(copy_study_rows(results)) or 'no family'} into {results}")
    for page, text in rendered_pages(args.docs, results).items():
        if page.read_text() != text:
            page.write_text(text)
            print(f"rewrote the results tables of {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
