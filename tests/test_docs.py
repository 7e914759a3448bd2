"""The README and the docs: result tables as the studies saved them, every config variable listed, working links."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from conftest import REPO_ROOT

from genforecast.config_files import ENVIRONMENT_VARIABLE
from genforecast.docs_tables import TABLES, main, rendered_pages

DOCS = REPO_ROOT / "docs"
README = REPO_ROOT / "README.md"


def test_the_docs_tables_are_the_ones_the_command_writes_from_the_saved_rows():
    pages = rendered_pages(DOCS, DOCS / "results")
    assert {page.name for page in pages} == {table.page for table in TABLES.values()}
    for page, text in pages.items():
        assert page.read_text() == text, f"{page} differs from its saved rows: run `make docs`"


def test_the_readme_lists_every_environment_variable_the_configs_read():
    read = {name for path in (REPO_ROOT / "configs").rglob("*.yaml")
            for name in ENVIRONMENT_VARIABLE.findall(path.read_text())}
    table = README.read_text().split("## Environment variables")[1].split("\n## ")[0]
    listed = {name for row in table.splitlines() if row.startswith("| `")
              for name in re.findall(r"`([A-Z0-9_]+)`", row.split(" | ")[0])}
    assert listed == read


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda path: path.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_the_readme_is_a_short_guide():
    assert len(README.read_bytes()) <= 15 * 1024


def test_the_command_rewrites_a_table_from_changed_rows(tmp_path, capsys):

    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    rows = json.loads((docs / "results" / "segforecast.json").read_text())
    measured = rows[-1]["mo_miou_gt"]
    rows[-1]["mo_miou_gt"] = 99.5
    (docs / "results" / "segforecast.json").write_text(json.dumps(rows))
    assert main(["--docs", str(docs)]) == 0
    assert "rewrote the results tables of" in capsys.readouterr().out
    page = (docs / "segforecast.md").read_text()
    others = [f"{rows[-1][key]:.3f}" for key in ("miou_gt", "miou_segmenter", "mo_miou_segmenter")]
    assert f"| S2S AR fine-tuned | {others[0]} | 99.500 | {others[1]} | {others[2]} |" in page
    assert page.replace("99.500", f"{measured:.3f}") == (DOCS / "segforecast.md").read_text()
