"""Config files compose from bases: a file ends with ``config: <base>`` and sets only keys its bases do not."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CONFIGS
from tiny_configs import PRESETS

from genforecast.cli import main
from genforecast.config_files import INCLUDE_KEY, environment_variables, included_files, read_config

INCLUDING = sorted(path for path in CONFIGS.rglob("*.yaml") if INCLUDE_KEY in yaml.safe_load(path.read_text()))


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("path", INCLUDING, ids=lambda path: str(path.relative_to(CONFIGS)))
def test_a_file_includes_its_base_last_and_sets_only_what_the_base_does_not(path: Path):
    contents = yaml.safe_load(path.read_text())
    assert list(contents)[-1] == INCLUDE_KEY, "jsonargparse lets a file's groups after the include replace the base's"
    own = {key for key, _ in _leaves({key: value for key, value in contents.items() if key != INCLUDE_KEY})}
    for base in included_files(path)[1:]:
        shared = own & {key for key, _ in _leaves(yaml.safe_load(base.read_text())) if key != INCLUDE_KEY}
        assert not shared, f"{base} sets {sorted(shared)} too, and an included file's values win"


@pytest.mark.parametrize("name", ["fashion/canh", "framegan/adv_gdl", "segforecast/s2s_ar_finetune", "f2f/p4",
                                  "joint/distance_ar_finetune"])
def test_read_config_composes_as_the_command_line_does(name: str, monkeypatch: pytest.MonkeyPatch, capsys):
    for variable in environment_variables(CONFIGS / f"{name}.yaml"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SystemExit):
        main(["fit", *PRESETS, f"--config={CONFIGS / name}.yaml", "--print_config"])
    printed = dict(_leaves(yaml.safe_load(capsys.readouterr().out)))
    composed = [(key, value) for key, value in _leaves(read_config(CONFIGS / f"{name}.yaml"))
                if not (isinstance(value, str) and "${" in value)]
    assert len(composed) > 20
    for key, value in composed:
        assert printed[key] == value, key


def test_a_papers_variants_hold_only_their_differences():
    p4, p5 = (yaml.safe_load((CONFIGS / "f2f" / f"{stage}.yaml").read_text()) for stage in ("p4", "p5"))
    differing = {key for key, value in _leaves(p4) if dict(_leaves(p5)).get(key) != value}
    assert differing == {"experiment.variant", "model.init_args.train_levels", "model.init_args.init_weights",
                         "model.init_args.initialise_levels_from.p4"}
