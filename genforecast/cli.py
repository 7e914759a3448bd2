"""``genforecast``: the suite's one command line.

Training jobs (``fit``, ``validate``, ``test``, ``predict``; ``--print_config`` shows the resolved
configuration) are LightningCLI runs whose configs compose from several ``--config`` files with OmegaConf
interpolation across files and command-line overrides (``parser_mode="omegaconf+"``)::

    genforecast fit --config configs/trainer/gpu.yaml --config configs/logger/wandb.yaml \\
        --config configs/fashion/canh.yaml --trainer.max_steps 20000

The jobs that are not one Lightning run have their own subcommands, listed in :data:`TOOLS`.

Why the stage is dispatched here rather than by LightningCLI's own subcommands: jsonargparse resolves
interpolations over the whole parsed config, which under subcommands is prefixed by the subcommand name
(``fit.data...``), so ``${data.init_args.resolution}`` would only resolve for one stage. One parser per run
(``run=False``) keeps every config file valid for every stage.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger

from lightning_modules.guard import DivergenceError

TOOLS: dict[str, tuple[str, str]] = {
    "demo-data": ("genforecast.demo_data.cli:main", "write the procedural demo datasets in the real on-disk layouts"),
    "study": ("genforecast.study:main", "train a paper's variants and baselines on a dataset and print the results table"),
    "bench": ("genforecast.bench.cli:main", "measure training throughput, peak memory and MFU against an eager fp32 baseline"),
}

STAGES = {"fit": "train (and validate) a model", "validate": "one pass over the validation set",
          "test": "one pass over the test set", "predict": "run inference on the predict set"}

USAGE = ("usage: genforecast <command> [options]; genforecast <command> --help\n\ncommands:\n"
         + "\n".join(f"  {name:<10} {text}" for name, text in STAGES.items())
         + "\n" + "\n".join(f"  {name:<10} {text}" for name, (_, text) in TOOLS.items()))

WANDB_LOGGER = "genforecast.loggers.SuiteWandbLogger"

# Lightning warnings that are expected in this suite, with the reason they are harmless here.
QUIET_WARNINGS = (
    # main() hands LightningCLI the arguments after the stage name on purpose.
    ".*not recommended to provide both args and command line arguments.*",
    # Frozen metric networks (classifiers, detectors) are kept in eval mode deliberately.
    ".*module\\(s\\) in eval mode at the start of training.*",
    # Adversarial modules checkpoint after both updates of a step; resume is exact (see AdversarialModule).
    ".*Using ModelCheckpoint with manual optimization.*",
)


class LoggedConfigCallback(SaveConfigCallback):
    """Writes the resolved config next to the run (as Lightning does) and logs it to the experiment tracker."""

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, Logger):
                logger.log_hyperparams({"config": self.parser.dump(self.config, skip_none=False, format="json")})


class SuiteCLI(LightningCLI):
    """LightningCLI with the suite's experiment naming, checkpointing and logging defaults."""

    def __init__(self, stage: str, args: Sequence[str], **kwargs: Any) -> None:
        for known in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=known)
        self.stage = stage
        kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf+", "prog": f"genforecast {stage}"})
        kwargs.setdefault("save_config_callback", LoggedConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(args=list(args), run=False, **kwargs)

    def run_stage(self) -> Any:
        """Run the stage (``trainer.fit`` etc.) with the parsed ``--ckpt_path``."""
        return getattr(self.trainer, self.stage)(self.model, datamodule=self.datamodule,
                                                 ckpt_path=self.config.ckpt_path)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--experiment.family", type=str, default="adhoc",
                            help="paper the run belongs to (W&B group, output folder)")
        parser.add_argument("--experiment.variant", type=str, default="run",
                            help="variant within the family (W&B run name, output sub-folder)")
        parser.add_argument("--experiment.tags", type=list[str], default=[], help="W&B tags")
        parser.add_argument("--experiment.output_dir", type=str | None, default=None,
                            help="run folder; default outputs/<family>/<variant>")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="checkpoint to resume or evaluate: a path, 'last' or 'best'")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # A variant's checkpoint folder holds its latest run: a rerun replaces last.ckpt rather than writing
        # last-v1.ckpt beside a stale last.ckpt that the next stage (init_weights, a study's evaluation) would read.
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 1,
                             "checkpoint.enable_version_counter": False,
                             "trainer.logger": {"class_path": WANDB_LOGGER}})

    def before_instantiate_classes(self) -> None:
        config = self.config
        experiment = config.experiment
        output_dir = experiment.output_dir or str(Path("outputs") / experiment.family / experiment.variant)
        experiment.output_dir = output_dir
        if config.trainer.default_root_dir is None:
            config.trainer.default_root_dir = output_dir
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(Path(output_dir) / "checkpoints")
        for logger in _as_list(config.trainer.logger):
            if isinstance(logger, Namespace) and logger.get("class_path") == WANDB_LOGGER:
                init_args = logger.get("init_args") or Namespace()
                defaults = {"name": experiment.variant, "group": experiment.family, "tags": list(experiment.tags),
                            "save_dir": output_dir, "job_type": self.stage}
                for key, value in defaults.items():
                    if init_args.get(key) is None:
                        init_args[key] = value
                logger.init_args = init_args


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def _load_tool(target: str) -> Callable[[Sequence[str]], int | None]:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genforecast`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command in TOOLS:
        return _load_tool(TOOLS[command][0])(rest) or 0
    if command not in STAGES:
        print(f"genforecast: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        SuiteCLI(command, rest).run_stage()
    except DivergenceError as error:
        print(f"genforecast: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
