"""The import layers of ``[tool.importlinter]`` in pyproject.toml hold: what ``make lint`` checks with ``lint-imports``."""

from __future__ import annotations

import pytest
from conftest import REPO_ROOT
from importlinter.cli import lint_imports


def test_layers_point_one_way(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(REPO_ROOT)
    assert lint_imports(config_filename=str(REPO_ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0
