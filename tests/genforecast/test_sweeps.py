"""The W&B sweep examples: valid sweep files whose agent command is a `genforecast fit` that parses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, REPO_ROOT

from genforecast.cli import main

SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))
METHODS = {"grid", "random", "bayes"}


def _agent_command(sweep: dict) -> list[str]:
    """The command a W&B agent runs: ``${env}`` dropped, ``${args}`` replaced by ``--name=value`` for each
    parameter (its first grid value, or its lower bound)."""
    arguments = []
    for name, spec in sweep["parameters"].items():
        value = spec["values"][0] if "values" in spec else spec.get("value", spec.get("min"))
        arguments.append(f"--{name}={value}")
    command = []
    for part in sweep["command"]:
        command += arguments if part == "${args}" else [] if part == "${env}" else [part]
    return command


def test_there_is_one_sweep_per_paper_example():
    assert {path.stem for path in SWEEPS} == {"fashion_canh_creativity", "framegan_lambda_adv", "f2f_lr"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda path: path.stem)
def test_sweep_file_is_valid_and_its_command_parses(path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["method"] in METHODS
    assert sweep["metric"]["goal"] in ("minimize", "maximize") and sweep["metric"]["name"].startswith("val/")
    for name, spec in sweep["parameters"].items():
        assert name.startswith("model.init_args.") and ({"values", "value", "distribution"} & spec.keys())
        if spec.get("distribution", "").endswith("uniform_values"):
            assert 0 < spec["min"] < spec["max"]
    assert sweep["command"][:3] == ["${env}", "genforecast", "fit"] and "${args}" in sweep["command"]
    command = _agent_command(sweep)
    monkeypatch.chdir(REPO_ROOT)  # agents run from the repository root, where the command's config paths are
    with pytest.raises(SystemExit) as exit_info:
        main([*command[1:], "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    configured = printed["checkpoint"]["monitor"]
    assert configured == sweep["metric"]["name"], "the sweep should optimise what the run checkpoints on"
    for name in sweep["parameters"]:
        section, _, key = name.partition(".init_args.")
        assert key in printed[section]["init_args"]
