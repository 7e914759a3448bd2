"""``genforecast study <family>``: train a paper's variants the same way and print one results table.

A study is a list of ordinary ``genforecast fit`` runs (the same configs a user runs by hand, plus the family's
demo overlays when the data is the procedural demo set) followed by a final validation of each run. Each study
module declares its runs as :class:`Stage` data (``DEMO_STAGES``: the runs of its demo), which the config tests
compose too. Each stage is
a run of its own (its own run folder and W&B run); later stages read what earlier ones wrote from those folders.
The study's tables are printed, written to its own folder ``outputs/<family>/study/<run id>/`` (``results.md``,
``results.json``; ``outputs/<family>/study/latest`` is the newest) and, with the W&B logger, logged as W&B
Tables in a ``results`` run of the paper's group. A study that trained and evaluated never fails because the
report could not be logged: it says so and keeps the files.

Under DDP (``--trainer ddp`` or ``slurm``) every rank runs the study script, as Lightning's launcher re-runs
the command on each rank; the stages' fits and validations are collective, and only rank zero writes the
tables.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from genforecast import runs

STUDIES = {"fashion": "genforecast.studies.fashion", "framegan": "genforecast.studies.framegan",
           "segforecast": "genforecast.studies.segforecast", "f2f": "genforecast.studies.f2f",
           "joint": "genforecast.studies.joint"}

FORECAST_COLUMNS = [("row", "method")] + [
    (f"{horizon}/{metric}", f"{horizon} {label}") for horizon in ("short", "mid")
    for metric, label in (("ap50", "AP50"), ("ap", "AP"), ("mo_miou", "MO-mIoU"))] + [
    ("train_minutes", "training (min)"), ("parameters_m", "params (M)")]
"""The columns of the future instance segmentation table shared by the F2F and joint studies (the talk's table)."""

Columns = list[tuple[str, str]]
Rows = list[dict[str, object]]


@dataclass
class StageRun:
    """One stage of a study: its final validation metrics and the run folder it wrote."""

    metrics: dict[str, float]
    run_dir: Path

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / runs.CHECKPOINTS / runs.LAST_CHECKPOINT


def fit_and_validate(config_files: Sequence[str | Path], overrides: Sequence[str] = ()) -> StageRun:
    """Run ``genforecast fit`` with these configs, then one validation pass; return its metrics and run folder.

    The metrics also hold the fit's wall time (``train_seconds``) and the model's trainable parameter count
    (``parameters``).
    """
    from genforecast.training_cli import SuiteCLI

    cli = SuiteCLI("fit", [*(f"--config={path}" for path in config_files), *overrides])
    start = time.perf_counter()
    cli.run_stage()
    elapsed = time.perf_counter() - start
    results = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    finish_wandb_run()
    parameters = sum(p.numel() for p in cli.model.parameters() if p.requires_grad)
    metrics = {name: float(value) for name, value in results[0].items()}
    return StageRun(metrics | {"train_seconds": elapsed, "parameters": float(parameters)}, cli.run.path)


def validate(config_files: Sequence[str | Path], overrides: Sequence[str] = ()) -> StageRun:
    """Run ``genforecast validate`` with these configs (pass ``--ckpt_path``); return its metrics and run folder."""
    from genforecast.training_cli import SuiteCLI

    cli = SuiteCLI("validate", [*(f"--config={path}" for path in config_files), *overrides])
    results = cli.run_stage()
    finish_wandb_run()
    return StageRun({name: float(value) for name, value in results[0].items()}, cli.run.path)


def finish_wandb_run() -> None:
    """End the process's W&B run, if any. A study runs several stages in one process, and a new ``WandbLogger``
    joins the run already in progress instead of starting its own, which would log every stage into the first."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


@dataclass(frozen=True)
class Stage:
    """One run of a study: its experiment config and the demo overlays composed after it on the procedural demo data,
    each a path under the config folder without ``.yaml`` (``"fashion/gan"``, ``"fashion/demo/gan"``)."""

    config: str
    demo_overlays: tuple[str, ...] = ()

    def files(self, setup: StudySetup) -> list[Path]:
        """The run's ``--config`` files: the presets, the experiment config and, on demo data, its overlays."""
        names = (self.config, *(self.demo_overlays if setup.demo else ()))
        return [*setup.presets, *(setup.configs / f"{name}.yaml" for name in names)]


@dataclass
class StudySetup:
    """What every study starts from: the config folder, the trainer/logger presets, demo or real data."""

    configs: Path
    presets: list[Path]
    demo: bool
    overrides: list[str]


def study_setup(args: argparse.Namespace, dataset: str, data_variable: str) -> StudySetup:
    """Presets from ``args``; the procedural demo set ``dataset`` (written if missing) unless ``data_variable``
    names real data in the environment, in which case the configs' own data paths are used. With the W&B logger
    every stage attaches its weights to its W&B run."""
    from genforecast.demo_data.cli import ensure_demo_dataset

    configs = Path(args.configs)
    presets = [configs / "trainer" / f"{args.trainer}.yaml", configs / "logger" / f"{args.logger}.yaml"]
    demo = data_variable not in os.environ
    overrides = list(args.override)
    if args.logger == "wandb":
        overrides.insert(0, "--experiment.log_artifacts=true")
    if demo:
        overrides.append(f"--data.init_args.root={ensure_demo_dataset(dataset, args.demo_root)}")
    return StudySetup(configs, presets, demo, overrides)


def markdown_table(rows: Rows, columns: Columns) -> str:
    """A GitHub-markdown table; ``columns`` pairs a row key with its header. Floats get 3 decimals."""
    def cell(value: object) -> str:
        return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header for _, header in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def forecast_rows(names: dict[str, str], short: StageRun, mid: StageRun, trained: str) -> Rows:
    """Rows of :data:`FORECAST_COLUMNS` for each predictor of ``names`` from its ``val/<predictor>/<metric>`` scores
    (in %); the ``trained`` predictor's row also gets the mid-term run's training minutes and parameters."""
    rows = []
    for predictor, name in names.items():
        row: dict[str, object] = {"row": name}
        for horizon, stage in (("short", short), ("mid", mid)):
            for metric in ("ap50", "ap", "mo_miou"):
                row[f"{horizon}/{metric}"] = 100 * stage.metrics.get(f"val/{predictor}/{metric}", math.nan)
        if predictor == trained:
            row["train_minutes"] = mid.metrics["train_seconds"] / 60
            row["parameters_m"] = mid.metrics["parameters"] / 1e6
        rows.append(row)
    return rows


def _cell_value(value: object) -> object:
    """A W&B Table cell: floats rounded, missing cells ``None`` (a column must not mix numbers and strings)."""
    return round(value, 3) if isinstance(value, float) else value


def log_tables_to_wandb(family: str, tables: dict[str, tuple[Rows, Columns]]) -> None:
    """Log each table as a W&B Table in a ``results`` run of the family's group (job type ``study``), so the
    results sit beside the runs they come from on the dashboard."""
    from genforecast.loggers import SuiteWandbLogger

    logger = SuiteWandbLogger(name="results", group=family, job_type="study", tags=[family, "results"],
                              save_dir=str(runs.study_folder(family)))
    for key, (rows, columns) in tables.items():
        logger.log_table(key=f"results/{key}", columns=[header for _, header in columns],
                         data=[[_cell_value(row.get(name)) for name, _ in columns] for row in rows])
    finish_wandb_run()


def publish_results(args: argparse.Namespace, family: str, title: str, tables: dict[str, tuple[Rows, Columns]],
                    note: str = "", rows: Rows | None = None) -> Path | None:
    """Print a study's tables under ``title`` and write them to the study's folder (``results.md``, and ``rows`` as
    ``results.json`` for other studies' combined tables); with the W&B logger preset, log them to W&B too.

    ``tables`` maps a name (the table's heading when there are several) to its rows and columns; ``note`` is
    printed under the title. Rank zero only; returns the ``results.md`` path (``None`` on other ranks).
    """
    if not runs.is_global_zero():
        return None
    texts = [markdown_table(table_rows, columns) for table_rows, columns in tables.values()]
    if len(tables) > 1:
        texts = [f"{name}:\n{text}" for name, text in zip(tables, texts)]
    body = "\n\n".join(texts)
    folder = runs.claim_run_folder(runs.study_folder(family), "fit").path
    output = folder / "results.md"
    output.write_text(body + "\n")
    if rows is not None:
        (folder / "results.json").write_text(json.dumps(rows, indent=1))
    runs.point_latest(runs.study_folder(family), folder)
    print(f"\n{title}{note}\n\n{body}")
    print(f"\nwritten to {output}")
    if args.logger == "wandb":
        try:
            log_tables_to_wandb(family, tables)
        except Exception as error:  # noqa: BLE001 - the tables are written; a report must not fail the study
            print(f"warning: the results could not be logged to W&B ({type(error).__name__}: {error}); "
                  f"they are in {output}")
    return output


def read_rows(family: str) -> Rows:
    """The rows the newest study of ``family`` saved (``results.json``), or none when it has not run."""
    path = runs.study_folder(family) / runs.LATEST / "results.json"
    return json.loads(path.read_text()) if path.is_file() else []


def default_trainer_preset() -> str:
    """``gpu`` when a GPU is visible (as the Makefile decides, with ``nvidia-smi``), else ``cpu``."""
    return "gpu" if shutil.which("nvidia-smi") and os.system("nvidia-smi -L >/dev/null 2>&1") == 0 else "cpu"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genforecast study", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    parser.add_argument("family", choices=sorted(STUDIES), help="which paper's study to run")
    parser.add_argument("--trainer", default=None,
                        help="trainer preset configs/trainer/<name>.yaml; None: gpu when a GPU is visible, else cpu")
    parser.add_argument("--logger", default="wandb", help="logger preset: configs/logger/<name>.yaml")
    parser.add_argument("--demo-root", default="data/demo", help="where the procedural demo data lives")
    parser.add_argument("--configs", default="configs", help="config folder")
    parser.add_argument("--override", action="append", default=[],
                        help="extra command-line override for every run, e.g. --override=--trainer.max_steps=400")
    parser.add_argument("--all-variants", action="store_true", help="also the shape-conditioned variants")
    args = parser.parse_args(argv)
    args.trainer = args.trainer or default_trainer_preset()
    for preset in (Path(args.configs) / "trainer" / f"{args.trainer}.yaml",
                   Path(args.configs) / "logger" / f"{args.logger}.yaml"):
        if not preset.is_file():
            parser.error(f"preset {preset} does not exist: choose one of "
                         f"{sorted(path.stem for path in preset.parent.glob('*.yaml'))}")
    importlib.import_module(STUDIES[args.family]).run(args)
    return 0
