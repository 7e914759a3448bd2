"""How the experiment config files compose, for the tools that read them without parsing a run.

An experiment config (``configs/<family>/<variant>.yaml``) names its model and data classes and sets what is its
own; it ends with ``config: <base>``, a path relative to the file, and jsonargparse then loads the base into it. The
base holds what a paper's variants share and includes ``configs/data/<dataset>.yaml`` the same way. jsonargparse
loads an included file after the keys before it and lets the included values win, so a file sets only keys its
bases do not (tests/genforecast/test_config_files.py checks it) and ``config:`` comes last. Presets and overlays
given as further ``--config`` options merge over the result as usual.

:func:`read_config` gives the composed file as plain YAML (interpolations unresolved), as ``genforecast fit`` would
compose it before resolving; :func:`environment_variables` the variables its ``${oc.env:NAME,default}``
interpolations read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

INCLUDE_KEY = "config"
ENVIRONMENT_VARIABLE = re.compile(r"\$\{oc\.env:([A-Z0-9_]+)")


def included_files(path: str | Path) -> list[Path]:
    """``path`` and every file it includes, in the order they include each other."""
    files = [Path(path)]
    while (include := yaml.safe_load(files[-1].read_text()).get(INCLUDE_KEY)) is not None:
        files.append(files[-1].parent / include)
    return files


def _merged(base: dict[str, Any], winner: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in winner.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config(path: str | Path) -> dict[str, Any]:
    """The config file ``path`` with its includes merged in (see the module docstring), without the include key."""
    composed: dict[str, Any] = {}
    for file in included_files(path):
        contents = yaml.safe_load(file.read_text())
        contents.pop(INCLUDE_KEY, None)
        composed = _merged(composed, contents)
    return composed


def environment_variables(path: str | Path) -> list[str]:
    """The environment variables the config file ``path`` and its includes read, sorted."""
    return sorted({name for file in included_files(path) for name in ENVIRONMENT_VARIABLE.findall(file.read_text())})
