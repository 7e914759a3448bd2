"""``genforecast study <family>``: train a paper's variants the same way and print one results table.

A study is a list of ordinary ``genforecast fit`` runs (the same configs a user runs by hand, plus the family's
demo overlay when the data is the procedural demo set) followed by a final validation of each run; the table
is printed and written to ``outputs/<family>/results.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import wandb

from genforecast.cli import SuiteCLI
from genforecast.demo_data.cli import ensure_demo_dataset
from genforecast.loggers import SuiteWandbLogger

STUDIES = {"fashion": "genforecast.studies.fashion", "framegan": "genforecast.studies.framegan",
           "segforecast": "genforecast.studies.segforecast", "f2f": "genforecast.studies.f2f",
           "joint": "genforecast.studies.joint"}

FORECAST_COLUMNS = [("row", "method")] + [
    (f"{horizon}/{metric}", f"{horizon} {label}") for horizon in ("short", "mid")
    for metric, label in (("ap50", "AP50"), ("ap", "AP"), ("mo_miou", "MO-mIoU"))] + [
    ("train_minutes", "training (min)"), ("parameters_m", "params (M)")]
"""The columns of the future instance segmentation table shared by the F2F and joint studies (the talk's table)."""


def fit_and_validate(config_files: Sequence[str | Path], overrides: Sequence[str] = ()) -> dict[str, float]:
    """Run ``genforecast fit`` with these configs, then one validation pass; return its metrics.

    The fit's wall time (seconds) and the model's trainable parameter count are returned too, as
    ``train_seconds`` and ``parameters``.
    """
    cli = SuiteCLI("fit", [*(f"--config={path}" for path in config_files), *overrides])
    start = time.perf_counter()
    cli.run_stage()
    elapsed = time.perf_counter() - start
    results = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    finish_wandb_run()
    parameters = sum(p.numel() for p in cli.model.parameters() if p.requires_grad)
    return {name: float(value) for name, value in results[0].items()} | {"train_seconds": elapsed,
                                                                         "parameters": float(parameters)}


def validate(config_files: Sequence[str | Path], overrides: Sequence[str] = ()) -> dict[str, float]:
    """Run ``genforecast validate`` with these configs (pass ``--ckpt_path``); return its metrics."""
    cli = SuiteCLI("validate", [*(f"--config={path}" for path in config_files), *overrides])
    results = cli.run_stage()
    finish_wandb_run()
    return {name: float(value) for name, value in results[0].items()}


def finish_wandb_run() -> None:
    """End the process's W&B run, if any. A study runs several stages in one process, and a new ``WandbLogger``
    joins the run already in progress instead of starting its own, which would log every stage into the first."""
    if wandb.run is not None:
        wandb.finish()


@dataclass
class StudySetup:
    """What every study starts from: the config folder, the trainer/logger presets, demo or real data."""

    configs: Path
    presets: list[Path]
    demo: bool
    overrides: list[str]


def study_setup(args: argparse.Namespace, dataset: str, data_variable: str) -> StudySetup:
    """Presets from ``args``; the procedural demo set ``dataset`` (written if missing) unless ``data_variable``
    names real data in the environment, in which case the configs' own data paths are used."""
    configs = Path(args.configs)
    presets = [configs / "trainer" / f"{args.trainer}.yaml", configs / "logger" / f"{args.logger}.yaml"]
    demo = data_variable not in os.environ
    overrides = list(args.override)
    if demo:
        overrides.append(f"--data.init_args.root={ensure_demo_dataset(dataset, args.demo_root)}")
    return StudySetup(configs, presets, demo, overrides)


def markdown_table(rows: list[dict[str, object]], columns: list[tuple[str, str]]) -> str:
    """A GitHub-markdown table; ``columns`` pairs a row key with its header. Floats get 3 decimals."""
    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header for _, header in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(key, "")) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def forecast_rows(names: dict[str, str], short: dict[str, float], mid: dict[str, float],
                  trained: str) -> list[dict[str, object]]:
    """Rows of :data:`FORECAST_COLUMNS` for each predictor of ``names`` from its ``val/<predictor>/<metric>`` scores
    (in %); the ``trained`` predictor's row also gets the mid-term run's training minutes and parameters."""
    rows = []
    for predictor, name in names.items():
        row: dict[str, object] = {"row": name}
        for horizon, metrics in (("short", short), ("mid", mid)):
            for metric in ("ap50", "ap", "mo_miou"):
                row[f"{horizon}/{metric}"] = 100 * metrics.get(f"val/{predictor}/{metric}", math.nan)
        if predictor == trained:
            row["train_minutes"] = mid["train_seconds"] / 60
            row["parameters_m"] = mid["parameters"] / 1e6
        rows.append(row)
    return rows


Columns = list[tuple[str, str]]


def _cell_value(value: object) -> object:
    return round(value, 3) if isinstance(value, float) else value


def log_tables_to_wandb(family: str, tables: dict[str, tuple[list[dict[str, object]], Columns]]) -> None:
    """Log each table as a W&B Table in a ``results`` run of the family's group (job type ``study``), so the
    results sit beside the runs they come from on the dashboard."""
    logger = SuiteWandbLogger(name="results", group=family, job_type="study", tags=[family, "results"])
    for key, (rows, columns) in tables.items():
        logger.log_table(key=f"results/{key}", columns=[header for _, header in columns],
                         data=[[_cell_value(row.get(name, "")) for name, _ in columns] for row in rows])
    finish_wandb_run()


def publish_results(args: argparse.Namespace, family: str, title: str,
                    tables: dict[str, tuple[list[dict[str, object]], Columns]], note: str = "") -> Path:
    """Print a study's tables under ``title``, write them to ``outputs/<family>/results.md`` and, with the W&B logger
    preset, log them to W&B. ``tables`` maps a name (the table's heading when there are several) to its rows and
    columns; ``note`` is printed under the title."""
    texts = [markdown_table(rows, columns) for rows, columns in tables.values()]
    if len(tables) > 1:
        texts = [f"{name}:\n{text}" for name, text in zip(tables, texts)]
    body = "\n\n".join(texts)
    output = Path("outputs") / family / "results.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(body + "\n")
    print(f"\n{title}{note}\n\n{body}")
    print(f"\nwritten to {output}")
    if args.logger == "wandb":
        log_tables_to_wandb(family, tables)
    return output


def write_rows(family: str, rows: list[dict[str, object]]) -> Path:
    """Save a study's table rows as ``outputs/<family>/results.json`` (for other studies' combined tables)."""
    path = Path("outputs") / family / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    return path


def read_rows(family: str) -> list[dict[str, object]]:
    """The rows another study saved with :func:`write_rows`, or none when it has not run."""
    path = Path("outputs") / family / "results.json"
    return json.loads(path.read_text()) if path.is_file() else []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genforecast study", description=__doc__)
    parser.add_argument("family", choices=sorted(STUDIES))
    parser.add_argument("--trainer", default="cpu", help="trainer preset: configs/trainer/<name>.yaml")
    parser.add_argument("--logger", default="wandb", help="logger preset: configs/logger/<name>.yaml")
    parser.add_argument("--demo-root", default="data/demo", help="where the procedural demo data lives")
    parser.add_argument("--configs", default="configs", help="config folder")
    parser.add_argument("--override", action="append", default=[],
                        help="extra command-line override for every run, e.g. --override=--trainer.max_steps=400")
    parser.add_argument("--all-variants", action="store_true", help="also the shape-conditioned variants")
    args = parser.parse_args(argv)
    importlib.import_module(STUDIES[args.family]).run(args)
    return 0
