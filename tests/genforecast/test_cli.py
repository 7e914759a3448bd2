"""The command line: every experiment config runs on CPU, interpolation and overrides, errors, resume."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS
from tiny_configs import EXPERIMENTS, FAMILY_ENVIRONMENT, PRESETS, TINY

from genforecast import cli
from genforecast.cli import main
from genforecast.loggers import SuiteWandbLogger
from genforecast.study import STUDIES, Stage
from genforecast.training_cli import SuiteCLI
from lightning_modules.guard import DivergenceError


def _point_family_at_tiny_data(family: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    for variable, fixture in FAMILY_ENVIRONMENT[family].items():
        monkeypatch.setenv(variable, str(request.getfixturevalue(fixture)))


@pytest.fixture
def suite_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest):
    """Chdir to a tmp dir and point the configs of the parametrized config's family at tiny data."""
    monkeypatch.chdir(tmp_path)
    _point_family_at_tiny_data(request.node.callspec.params["config"].parent.name, monkeypatch, request)
    return tmp_path


DEMO_COMPOSITIONS: list[Stage] = [stage for module in STUDIES.values()
                                   for stage in importlib.import_module(module).DEMO_STAGES]
"""Every run of the studies' demos: its experiment config and the demo overlays composed after it."""


@pytest.fixture
def fashion_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest):
    monkeypatch.chdir(tmp_path)
    _point_family_at_tiny_data("fashion", monkeypatch, request)
    return tmp_path


def _model_class(config: Path) -> str:
    return yaml.safe_load(config.read_text())["model"]["class_path"]


def test_every_experiment_has_tiny_overrides():
    assert EXPERIMENTS, "no experiment configs found"
    assert {_model_class(config) for config in EXPERIMENTS} <= TINY.keys()
    assert {config.parent.name for config in EXPERIMENTS} <= FAMILY_ENVIRONMENT.keys()


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_experiment_config_fast_dev_run_on_cpu(config: Path, suite_env: Path):
    args = ["fit", *PRESETS, f"--config={config}", *TINY[_model_class(config)], "--trainer.fast_dev_run=2"]
    assert main(args) == 0


def test_every_demo_overlay_is_composed():
    composed = {overlay for stage in DEMO_COMPOSITIONS for overlay in stage.demo_overlays}
    assert composed == {str(path.relative_to(CONFIGS).with_suffix("")) for path in CONFIGS.glob("*/demo/*.yaml")}


@pytest.mark.parametrize("stage", DEMO_COMPOSITIONS,
                         ids=["+".join((stage.config, *stage.demo_overlays)) for stage in DEMO_COMPOSITIONS])
def test_demo_composition_fast_dev_run_on_cpu(stage: Stage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              request: pytest.FixtureRequest):
    monkeypatch.chdir(tmp_path)
    _point_family_at_tiny_data(stage.config.split("/")[0], monkeypatch, request)
    config = CONFIGS / f"{stage.config}.yaml"
    args = ["fit", *PRESETS, *(f"--config={CONFIGS / name}.yaml" for name in (stage.config, *stage.demo_overlays)),
            *TINY[_model_class(config)], "--trainer.fast_dev_run=2"]
    assert main(args) == 0


def test_print_config_resolves_interpolation_across_files_and_overrides(fashion_env: Path, capsys):
    config = CONFIGS / "fashion" / "canh.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *PRESETS, f"--config={config}", "--data.init_args.resolution=32", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["resolution"] == 32
    assert printed["experiment"]["variant"] == "canh"
    assert printed["data"]["init_args"]["root"].endswith("fashion_catalogue")


def test_unknown_config_key_fails_before_any_work(fashion_env: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *PRESETS, f"--config={CONFIGS / 'fashion' / 'gan.yaml'}", "--model.init_args.learning_rat=1"])
    assert exit_info.value.code != 0
    assert "learning_rat" in capsys.readouterr().err
    assert not (fashion_env / "outputs").exists()


def test_wandb_logger_is_named_and_grouped_by_experiment(fashion_env: Path):
    config = CONFIGS / "fashion" / "can.yaml"
    run = SuiteCLI("fit", [f"--config={CONFIGS / 'trainer' / 'cpu.yaml'}", f"--config={config}",
                           *TINY["lightning_modules.FashionCAN"]])
    logger = run.trainer.logger
    assert isinstance(logger, SuiteWandbLogger)
    assert logger._wandb_init["name"] == "can"
    assert logger._wandb_init["group"] == "fashion"
    assert "can" in logger._wandb_init["tags"]
    assert Path(run.trainer.checkpoint_callback.dirpath) == fashion_env / "outputs" / "fashion" / "can" / run.run.run_id / "checkpoints"
    assert logger._wandb_init["dir"] == str(run.run.path)


def test_ckpt_path_last_resumes(fashion_env: Path):
    base = ["fit", *PRESETS, f"--config={CONFIGS / 'fashion' / 'gan.yaml'}", *TINY["lightning_modules.FashionCAN"],
            "--model.init_args.classifier_weights=null", "--trainer.max_epochs=-1",
            "--trainer.limit_val_batches=0", "--checkpoint.every_n_train_steps=2", "--checkpoint.monitor=null"]
    assert main([*base, "--trainer.max_steps=4"]) == 0
    last = fashion_env / "outputs" / "fashion" / "gan" / "latest" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    run = SuiteCLI("fit", [*base[1:], "--trainer.max_steps=8", "--ckpt_path=last"])
    run.run_stage()
    assert run.trainer.global_step == 8
    assert run.model.step_index == 4


def test_divergence_is_reported_with_exit_code(monkeypatch: pytest.MonkeyPatch, capsys):
    def diverge(self):
        raise DivergenceError("training diverged: non-finite generator loss at global step 7")

    monkeypatch.setattr(cli, "_run_stage", lambda stage, args: diverge(None))
    assert main(["fit"]) == 3
    assert "global step 7" in capsys.readouterr().err


def test_help_lists_stages_and_tools(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "demo-data", "study", "bench"):
        assert command in out
    assert main(["train"]) == 2


def test_a_rerun_gets_its_own_run_folder_and_leaves_the_first_untouched(fashion_env: Path):
    args = ["fit", *PRESETS, f"--config={CONFIGS / 'fashion' / 'gan.yaml'}", *TINY["lightning_modules.FashionCAN"],
            "--model.init_args.classifier_weights=null", "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0",
            "--checkpoint.monitor=null", "--trainer.max_steps=4"]
    assert main(args) == 0
    variant = fashion_env / "outputs" / "fashion" / "gan"
    first = (variant / "latest").resolve()
    first_last = (first / "checkpoints" / "last.ckpt").read_bytes()
    assert main([*args[:-1], "--trainer.max_steps=2"]) == 0
    second = (variant / "latest").resolve()
    assert second != first and second.parent == first.parent
    assert (first / "checkpoints" / "last.ckpt").read_bytes() == first_last
    for run in (first, second):
        assert {path.name for path in run.iterdir()} >= {"checkpoints", "csv", "config.yaml", "run.json"}
