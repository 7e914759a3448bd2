"""The training stages of ``genforecast`` (``fit``, ``validate``, ``test``, ``predict``): LightningCLI runs.

Configs compose from several ``--config`` files with OmegaConf interpolation across files and command-line
overrides (``parser_mode="omegaconf+"``)::

    genforecast fit --config configs/trainer/gpu.yaml --config configs/logger/wandb.yaml \\
        --config configs/fashion/canh.yaml --trainer.max_steps 20000

What :class:`SuiteCLI` adds to LightningCLI:

* every run writes into its own run folder (:mod:`genforecast.runs`): checkpoints, metrics, the resolved config,
  pictures, predictions and the W&B files; ``experiment.output_dir`` moves all of it;
* ``--ckpt_path last|best`` names the newest fit of the variant; resuming a fit continues its folder and its
  W&B run; a damaged checkpoint or one written by another model stops with a message naming what to use;
* :class:`genforecast.checkpointing.RunCheckpoint` (``last.ckpt`` at the end of every fit, every N minutes and on
  SIGTERM/SIGUSR1 with SLURM requeue) and :class:`~genforecast.checkpointing.ResumedOptimizerSettings` (an
  optimiser setting given when resuming wins over the checkpoint's);
* the resolved config logged nested (``model.init_args.lr`` is filterable on W&B), learning rates logged,
  pictures and metrics on the same step axis, weights attached to the W&B run (``experiment.log_artifacts``);
* progress as a bar in a terminal and as plain lines in a log, the final metrics as a table;
* abbreviated options are errors (``--trainer.max_step`` does not silently mean ``max_steps``).

Why the stage is dispatched by ``genforecast`` rather than by LightningCLI's own subcommands: jsonargparse
resolves interpolations over the whole parsed config, which under subcommands is prefixed by the subcommand name
(``fit.data...``), so ``${data.init_args.resolution}`` would only resolve for one stage. One parser per run
(``run=False``) keeps every config file valid for every stage.
"""

from __future__ import annotations

import logging
import os
import secrets
import string
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger

from genforecast import runs
from genforecast.checkpointing import ResumedOptimizerSettings, RunCheckpoint
from genforecast.loggers import SuiteWandbLogger
from genforecast.prediction import PredictionWriter
from genforecast.progress import metrics_table, progress_callback

WANDB_LOGGER = "genforecast.loggers.SuiteWandbLogger"
CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"

QUIET_WARNINGS = (
    # main() hands LightningCLI the arguments after the stage name on purpose.
    r"LightningCLI's args parameter is intended to run from within Python like if it were from the command line.*",
    ".*not recommended to provide both args and command line arguments.*",
    # Frozen metric networks (classifiers, detectors) are kept in eval mode deliberately.
    r"Found \d+ module\(s\) in eval mode at the start of training.*",
    # Adversarial modules checkpoint after both updates of a step; resume is exact (see AdversarialModule).
    "Using ModelCheckpoint with manual optimization.*",
    # Every run has a folder of its own (genforecast.runs); a non-empty one is a resumed run.
    r"Checkpoint directory .* exists and is not empty\.",
    # torch's pytree deprecation inside Lightning's own code.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    # Validation metrics are torchmetrics Metrics, synchronised over ranks when computed, then logged once.
    r"It is recommended to use `self.log\('val/.*', \.\.\., sync_dist=True\)` when logging on epoch level in "
    r"distributed setting to accumulate the metric across devices\.",
    # The prediction writer names files by sample, not by the batch indices Lightning would track.
    r"Couldn't infer the batch indices fetched from your dataloader: `ResumableDataLoader`.*",
)
"""Third-party warnings a user cannot act on, matched by their exact text (nothing is silenced wholesale)."""

QUIET_LOG_LINES = ("💡 Tip: For seamless cloud logging and experiment tracking",)
"""Beginnings of third-party log lines a user cannot act on (Lightning's litlogger advertisement)."""


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(QUIET_LOG_LINES)


def quiet_third_party_messages() -> None:
    """Filter the messages of :data:`QUIET_WARNINGS` and :data:`QUIET_LOG_LINES`, and nothing else."""
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(existing, _DropLines) for existing in rank_zero_logger.filters):
        rank_zero_logger.addFilter(_DropLines())


class RunConfigCallback(SaveConfigCallback):
    """Writes the resolved config into the run folder and logs it, nested, to every logger.

    A resumed fit keeps its first ``config.yaml`` and writes ``config.resumed-<n>.yaml`` beside it. Nested, the
    config's keys stay filterable on W&B (``model.init_args.lr``) instead of one JSON string.
    """

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.already_saved:
            return
        self.already_saved = True
        if not trainer.is_global_zero:
            return
        run_dir = Path(trainer.default_root_dir)
        path, resumption = run_dir / "config.yaml", 0
        while path.exists():
            resumption += 1
            path = run_dir / f"config.resumed-{resumption}.yaml"
        self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=False)
        nested = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            if isinstance(logger, Logger):
                logger.log_hyperparams(nested)


class SuiteCLI(LightningCLI):
    """LightningCLI with the suite's run folders, checkpointing, logging and progress (see the module docstring)."""

    def __init__(self, stage: str, args: Sequence[str], **kwargs: Any) -> None:
        quiet_third_party_messages()
        self.stage = stage
        self.run: runs.RunFolder | None = None
        kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf+", "prog": f"genforecast {stage}",
                                            "allow_abbrev": False})
        kwargs.setdefault("save_config_callback", RunConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("trainer_defaults", {"callbacks": [ResumedOptimizerSettings()]})
        try:
            super().__init__(args=list(args), run=False, **kwargs)
        except BaseException:
            if self.run is not None and runs.is_global_zero():
                runs.release_unused(self.run)
            raise
        self._after_instantiation()

    # ---- parsing ------------------------------------------------------------------------------------------

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--experiment.family", type=str, default="adhoc",
                            help="paper the run belongs to (W&B group, output folder)")
        parser.add_argument("--experiment.variant", type=str, default="run",
                            help="variant within the family (W&B run name, output sub-folder)")
        parser.add_argument("--experiment.tags", type=list[str], default=[], help="W&B tags")
        parser.add_argument("--experiment.output_dir", type=str | None, default=None,
                            help="folder of this variant's runs (each run in a sub-folder); "
                                 "default outputs/<family>/<variant>")
        parser.add_argument("--experiment.log_artifacts", type=bool, default=False,
                            help="attach last/best checkpoints and exported weights to the W&B run at the end of "
                                 "a fit (the studies turn it on)")
        parser.add_argument("--experiment.progress_every_seconds", type=float, default=30.0,
                            help="when output is not a terminal, seconds between plain progress lines")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="checkpoint to resume or evaluate: a path, or 'last' / 'best' of the variant's "
                                 "newest fit (a fit with 'last' and nothing to resume starts from scratch)")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 1,
                             "checkpoint.enable_version_counter": False,
                             "trainer.logger": {"class_path": WANDB_LOGGER},
                             "trainer.enable_autolog_hparams": False})

    def before_instantiate_classes(self) -> None:
        config = self.config
        experiment = config.experiment
        variant_dir = runs.variant_folder(experiment.family, experiment.variant, experiment.output_dir)
        checkpoint = runs.resolve_checkpoint(config.ckpt_path, variant_dir, self.stage) if config.ckpt_path else None
        run = self._run_folder(variant_dir, checkpoint)
        if run.continues and checkpoint is None:
            newest = runs.newest_loadable_checkpoint(run.path)
            checkpoint = newest[0] if newest else None
        self.run, self.checkpoint = run, checkpoint
        config.ckpt_path = str(checkpoint) if checkpoint is not None else None
        experiment.output_dir = str(variant_dir)
        config.trainer.default_root_dir = str(run.path)
        config.checkpoint.dirpath = str(run.path / runs.CHECKPOINTS)
        wandb_id = runs.read_manifest(run.path).get("wandb_id") if run.continues else None
        for logger in _as_list(config.trainer.logger):
            if not isinstance(logger, Namespace):
                continue
            init_args = logger.get("init_args") or Namespace()
            if logger.get("class_path") == WANDB_LOGGER:
                defaults = {"name": experiment.variant, "group": experiment.family, "tags": list(experiment.tags),
                            # a W&B sweep agent names the run it started; a resumed fit keeps its own
                            "job_type": self.stage, "id": wandb_id or os.environ.get("WANDB_RUN_ID") or _new_wandb_id()}
                for key, value in defaults.items():
                    if init_args.get(key) is None:
                        init_args[key] = value
                init_args["save_dir"] = str(run.path)
            elif logger.get("class_path") == CSV_LOGGER:
                # Lightning's CSV writer replaces an existing metrics.csv: a resumed fit writes beside it.
                resumptions = len(list((run.path / "csv").glob("resumed-*"))) if run.continues else -1
                version = f"resumed-{resumptions + 1}" if run.continues else ""
                init_args["save_dir"], init_args["name"], init_args["version"] = str(run.path), "csv", version
            logger.init_args = init_args
        if config.trainer.enable_progress_bar is not False:
            self.trainer_defaults["callbacks"].append(progress_callback(experiment.progress_every_seconds))

    def _run_folder(self, variant_dir: Path, checkpoint: Path | None) -> runs.RunFolder:
        """The run folder: the checkpoint's own when a fit resumes, else a new one agreed on by every rank."""
        if self.stage == "fit" and checkpoint is not None:
            folder = runs.run_folder_of_checkpoint(checkpoint)
            if folder is not None:
                return runs.RunFolder(folder, folder.parent, folder.name, continues=True)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not distributed or torch.distributed.get_world_size() == 1:
            return runs.claim_run_folder(variant_dir, self.stage)
        # A later stage of a multi-stage process (a study): the ranks already talk, rank 0 decides.
        chosen = [runs.claim_run_folder(variant_dir, self.stage) if torch.distributed.get_rank() == 0 else None]
        torch.distributed.broadcast_object_list(chosen, src=0)
        return chosen[0]

    # ---- after instantiation ------------------------------------------------------------------------------

    def _after_instantiation(self) -> None:
        experiment = self.config.experiment
        if self.checkpoint is not None:
            runs.check_checkpoint_model(self.checkpoint, self.model)
        callback = self.trainer.checkpoint_callback
        if isinstance(callback, RunCheckpoint):
            callback.run = self.run
            callback.provenance = {"family": experiment.family, "variant": experiment.variant,
                                   "run_id": self.run.run_id}
        if self.trainer.loggers and self.stage == "fit":
            self.trainer.callbacks.append(LearningRateMonitor(logging_interval="step"))
        if self.stage == "predict":
            self.trainer.callbacks.append(PredictionWriter(self.run.path / "predictions"))
        if runs.is_global_zero():
            wandb_ids = [logger._wandb_init.get("id") for logger in self.trainer.loggers
                         if isinstance(logger, SuiteWandbLogger)]
            runs.start_manifest(self.run, self.stage, {"family": experiment.family, "variant": experiment.variant},
                                self.checkpoint)
            if wandb_ids:
                runs.update_manifest(self.run.path, wandb_id=wandb_ids[0])
        runs.hand_run_to_launched_ranks(self.run)

    def run_stage(self) -> Any:
        """Run the stage (``trainer.fit`` etc.) with the resolved checkpoint; record the outcome in ``run.json``."""
        status = "failed"
        kwargs = {"return_predictions": False} if self.stage == "predict" else {}  # the writer keeps them as files
        try:
            result = getattr(self.trainer, self.stage)(self.model, datamodule=self.datamodule,
                                                       ckpt_path=self.config.ckpt_path, **kwargs)
            status = "finished"
        except BaseException as error:
            status = getattr(error, "run_status", "failed")
            raise
        finally:
            if self.trainer.is_global_zero:
                runs.update_manifest(self.run.path, status=status, global_step=self.trainer.global_step)
        if self.trainer.is_global_zero:
            if self.stage == "predict":
                print(f"\npredictions written to {self.run.path / 'predictions'}")
            if self.stage == "fit":
                table = metrics_table(self.trainer.callback_metrics)
                if table:
                    print(f"\nfinal metrics ({self.run.path}):\n{table}")
                if self.config.experiment.log_artifacts:
                    self.log_weights()
        return result

    def log_weights(self) -> None:
        """Attach ``last.ckpt``, the best checkpoint and exported ``*.pt`` files to the W&B run."""
        experiment = self.config.experiment
        loggers = [logger for logger in self.trainer.loggers if isinstance(logger, SuiteWandbLogger)]
        if not loggers:
            return
        name = f"{experiment.family}-{experiment.variant}"
        callback = self.trainer.checkpoint_callback
        files = [(name, Path(callback.last_model_path), ["latest"])] if callback and callback.last_model_path else []
        if callback is not None and callback.best_model_path:
            files.append((name, Path(callback.best_model_path), ["best"]))
        files += [(f"{name}-{path.stem}", path, ["latest"]) for path in sorted(self.run.path.glob("*.pt"))]
        for artifact, path, aliases in files:
            if path.is_file():
                loggers[0].log_weights(artifact, path, aliases, {"run_folder": str(self.run.path)})


def _new_wandb_id() -> str:
    """A W&B run id (8 lowercase letters and digits), chosen here so the run folder can keep it for resuming."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]

