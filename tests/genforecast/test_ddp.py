"""Every model's whole fit under DDP on two CPU ranks (gloo), through the real `genforecast fit` command line.

Each model trains a few steps, validates in full with pictures logged to W&B (offline) and CSV, checkpoints, then
resumes with ``--ckpt_path last``, using the DDP preset adapted to the CPU (``configs/trainer/ddp_cpu.yaml``:
``SeparateNetworksDDPStrategy``, which wraps the GANs' two networks separately and every other model whole).
A hang fails the test instead of blocking CI: ``GENFORECAST_HANG_TIMEOUT`` makes every rank print its stacks
(faulthandler) and exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS, REPO_ROOT
from tiny_configs import FAMILY_ENVIRONMENT, TINY

HANG_SECONDS = 300
DDP_PRESETS = [f"--config={CONFIGS / 'trainer' / 'ddp_cpu.yaml'}",
               f"--config={CONFIGS / 'logger' / 'wandb_and_csv.yaml'}"]
SHORT_FIT = ["--trainer.max_epochs=-1", "--trainer.val_check_interval=2", "--trainer.check_val_every_n_epoch=null",
             "--trainer.limit_val_batches=2", "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=1"]

ONE_PER_BATCH = ["--data.init_args.batch_size=1"]  # 3 training snippets: one batch a rank, the third left out

SLOW = pytest.mark.slow  # about 40 s each on 2 cores: `make test` keeps one adversarial and one forecasting model

MODELS = [  # (family, experiment config, extra overrides): every LightningModule of the suite
    pytest.param("fashion", "gan", ["--checkpoint.monitor=val/fid_classifier"], id="fashion/gan"),
    pytest.param("fashion", "classifier", [], id="fashion/classifier", marks=SLOW),
    pytest.param("framegan", "adv_gdl", ["--data.init_args.frame_size=[32, 40]"], id="framegan/adv_gdl", marks=SLOW),
    pytest.param("segforecast", "segmenter", ONE_PER_BATCH, id="segforecast/segmenter", marks=SLOW),
    pytest.param("segforecast", "s2s_ar", ONE_PER_BATCH, id="segforecast/s2s_ar", marks=SLOW),
    pytest.param("f2f", "detector", ONE_PER_BATCH, id="f2f/detector", marks=SLOW),
    pytest.param("f2f", "p5", ONE_PER_BATCH, id="f2f/p5"),
    pytest.param("joint", "distance_ar", ONE_PER_BATCH, id="joint/distance_ar", marks=SLOW),
]
WITHOUT_PICTURES = {"classifier"}  # the shape/texture classifier logs accuracies only


def run_genforecast(args: list[str], cwd: Path, environment: dict[str, str],
                    timeout: float = HANG_SECONDS + 60) -> subprocess.CompletedProcess:
    """``python -m genforecast <args>`` in ``cwd``; Lightning's launcher re-runs the same command for rank 1."""
    # W&B settings of this process (e.g. the address of a W&B service an in-process test started) stay here.
    env = {name: value for name, value in os.environ.items() if not name.startswith("WANDB_")}
    env |= {**environment, "PYTHONPATH": str(REPO_ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
            "GENFORECAST_HANG_TIMEOUT": str(HANG_SECONDS)}
    for variable in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GENFORECAST_PARENT_RUN"):
        env.pop(variable, None)
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[variable] = str(cwd / "wandb-home")
    return subprocess.run([sys.executable, "-m", "genforecast", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _environment(family: str, request: pytest.FixtureRequest) -> dict[str, str]:
    return {variable: str(request.getfixturevalue(fixture)) for variable, fixture in FAMILY_ENVIRONMENT[family].items()}


@pytest.mark.parametrize(("family", "experiment", "extra"), MODELS)
def test_fit_validate_checkpoint_and_resume_on_two_cpu_ranks(family: str, experiment: str, extra: list[str],
                                                             tmp_path: Path, request: pytest.FixtureRequest):
    config = CONFIGS / family / f"{experiment}.yaml"
    model = yaml.safe_load(config.read_text())["model"]["class_path"]
    base = ["fit", *DDP_PRESETS, f"--config={config}", *TINY[model], *SHORT_FIT, *extra]
    environment = _environment(family, request)
    first = run_genforecast([*base, "--trainer.max_steps=4"], tmp_path, environment)
    assert first.returncode == 0, first.stderr[-6000:]
    run = (tmp_path / "outputs" / family / experiment / "latest").resolve()
    assert "val/" in (run / "csv" / "metrics.csv").read_text()  # a full validation ran and was logged
    if experiment not in WITHOUT_PICTURES:
        assert list((run / "images").rglob("*.png")), "no pictures logged"
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4

    second = run_genforecast([*base, "--trainer.max_steps=6", "--ckpt_path=last"], tmp_path, environment)
    assert second.returncode == 0, second.stderr[-6000:]
    assert (tmp_path / "outputs" / family / experiment / "latest").resolve() == run  # resumed in its folder
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "finished" and manifest["resumed_from"]
    runs = {path.name.rsplit("-", 1)[-1] for path in (run / "wandb").glob("offline-run-*")}
    assert runs == {manifest["wandb_id"]}  # the resumed fit continued the same W&B run


@pytest.fixture(scope="module")
def cityscapes_three_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 train and 3 val snippets: an odd number of val batches, which equal shares would pad or cut."""
    from genforecast.demo_data.cityscapes import write_cityscapes_sequences

    return write_cityscapes_sequences(tmp_path_factory.mktemp("data") / "cityscapes", size=(64, 128),
                                      sequences_per_split={"train": 1, "val": 3}, frames_per_snippet=20, seed=1)


def _validation_metrics(run: Path) -> dict[str, float]:
    import csv

    with (run / "csv" / "metrics.csv").open() as table:
        rows = list(csv.DictReader(table))
    return {name: float(value) for row in rows for name, value in row.items() if name.startswith("val/") and value}


def test_validation_under_ddp_counts_every_sample_once(cityscapes_three_val: Path, tmp_path: Path):
    """The joint forecaster's instance AP and semantic IoU (model and baselines) on 3 val snippets, one per batch:
    two ranks (2 + 1 snippets) give exactly the single-process scores."""
    args = [f"--config={CONFIGS / 'logger' / 'csv.yaml'}", f"--config={CONFIGS / 'joint' / 'distance_ar.yaml'}",
            f"--config={CONFIGS / 'joint' / 'demo' / 'forecaster.yaml'}", *TINY["lightning_modules.JointForecaster"],
            "--data.init_args.max_sequences=null", "--data.init_args.val_batch_size=1"]
    environment = {"CITYSCAPES_DATASET": str(cityscapes_three_val)}
    metrics = {}
    for name, preset in (("single", "cpu"), ("ddp", "ddp_cpu")):
        (tmp_path / name).mkdir()
        completed = run_genforecast(["validate", f"--config={CONFIGS / 'trainer' / f'{preset}.yaml'}", *args],
                                    tmp_path / name, environment)
        assert completed.returncode == 0, completed.stderr[-6000:]
        (run,) = (tmp_path / name / "outputs" / "joint" / "distance_ar").glob("*-validate")
        metrics[name] = _validation_metrics(run)
    assert {"val/model/ap", "val/copy_last/ap50", "val/model/mo_miou", "val/optical_flow/miou"} <= metrics["single"].keys()
    assert metrics["ddp"].keys() == metrics["single"].keys()
    for name, value in metrics["single"].items():
        assert metrics["ddp"][name] == pytest.approx(value, abs=1e-6), name


def test_a_study_runs_its_stages_in_order_on_two_ranks_and_writes_its_table_once(fashion_catalogue: Path,
                                                                                 tmp_path: Path):
    """Every rank runs the study script (Lightning's launcher re-runs the command); the stages' fits and
    validations are collective, the exported classifier is waited for, and only rank zero writes the table."""
    overrides = ["--data.init_args.resolution=32", "--data.init_args.batch_size=4", "--trainer.max_steps=2",
                 "--trainer.max_epochs=1", "--trainer.limit_val_batches=2"]  # overrides shared by every stage
    completed = run_genforecast(["study", "fashion", "--trainer", "ddp_cpu", "--logger", "csv",
                                 "--configs", str(CONFIGS), *(f"--override={arg}" for arg in overrides)],
                                tmp_path, {"FASHION_CATALOGUE": str(fashion_catalogue)})
    assert completed.returncode == 0, completed.stderr[-6000:]
    assert completed.stdout.count("DesIGN study") == 1  # printed once, by rank zero
    outputs = tmp_path / "outputs" / "fashion"
    (table,) = (outputs / "study").glob("2*/results.md")
    assert [line.split("|")[1].strip() for line in table.read_text().splitlines()[2:]] == ["gan", "can", "canh"]
    for stage in ("classifier", "gan", "can", "canh"):
        runs = [path for path in (outputs / stage).iterdir() if path.name != "latest"]
        assert len(runs) == 1, (stage, runs)  # both ranks used the same run folder for the stage
        assert json.loads((runs[0] / "run.json").read_text())["status"] == "finished"
