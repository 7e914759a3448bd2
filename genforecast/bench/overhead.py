"""Host overhead per training step: each model's step through ``Trainer.fit`` against a bare loop of the same work.

For every paper model (FashionCAN, FrameGAN, S2S, F2F, the joint forecaster) one real batch is taken from its
data module (F2F: random cached features of the shape its detector gives). Two copies of the module, initialised
alike, then train on that batch:

* **suite**: ``Trainer.fit`` on a loader that yields the batch every step, with the benchmarks' trainer (no logger,
  progress bar or checkpoints; ``log_every_n_steps`` 50): the module's own ``training_step`` with its divergence
  guard, per-step random generator, logging, optimiser toggling and schedulers, and Lightning's loop and hooks.
* **bare**: the same module's loss functions, backward passes, optimiser steps and schedulers in a plain loop
  (adversarial modules: each discriminator update then the generator update, the other network's parameters frozen
  by precomputed lists; one random generator for the whole run).

The bare step runs right after each suite step (from a callback), so both see the same machine load; the
overhead is the median over steps of ``suite step - bare step``. CPU only, one torch thread by default (the host is
what is measured; on a GPU the same Python runs between kernel launches). A second, shorter pass times where the
suite step's time goes: every function below is wrapped by a timer that charges its exclusive time (its own time
minus that of wrapped functions it calls) to a category; what no wrapped function covers is Lightning's loop.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial, wraps
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer, _init_optimizers_and_lr_schedulers
from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

from lightning_modules.adversarial import AdversarialModule
from lightning_modules.guard import DivergenceGuard, Verdict

Batch = dict[str, Any]
BareStep = Callable[[], None]

COMPUTE = ("losses (forward)", "backward", "optimizer step", "zero_grad")
"""Categories of work the bare loop does too."""


@dataclass(frozen=True)
class Case:
    """One model's training step: ``build()`` returns a fresh module (same initial weights every call) and
    ``batch`` is the batch both loops train on; ``losses(module, batch)`` is the bare loop's loss of a
    single-optimiser module (``None`` for adversarial modules, whose two loss functions are used)."""

    name: str
    setting: str
    build: Callable[[], L.LightningModule]
    batch: Batch
    losses: Callable[[L.LightningModule, Batch], torch.Tensor] | None = None


class RepeatedBatch:
    """A loader that yields the same batch ``length`` times."""

    def __init__(self, batch: Batch, length: int) -> None:
        self.batch = batch
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Batch]:
        return itertools.repeat(self.batch, self.length)


def bare_step(module: L.LightningModule, batch: Batch,
              losses: Callable[[L.LightningModule, Batch], torch.Tensor] | None) -> BareStep:
    """The module's training work without Lightning (see the module docstring); ``module`` gets a bare Trainer for
    ``configure_optimizers`` that read ``max_steps``."""
    module.trainer = L.Trainer(max_steps=10**6, accelerator="cpu", logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, enable_model_summary=False)
    module.train()
    optimizers, scheduler_configs = _init_optimizers_and_lr_schedulers(module)
    schedulers = [config.scheduler for config in scheduler_configs]
    rng = torch.Generator().manual_seed(0)
    if losses is not None:
        updates = [(optimizers[0], lambda: losses(module, batch), [])]
    else:
        networks = module.trained_networks
        optimizer_of = dict(zip(networks, optimizers))  # configure_optimizers: (generator's, discriminator's)

        def update(name: str, compute: Callable[[Batch, torch.Generator], dict[str, torch.Tensor]]) -> tuple:
            others = [p for other in networks if other != name for p in getattr(module, other).parameters()]
            return optimizer_of[name], lambda: compute(batch, rng)["loss"], others

        updates = [update("discriminator", module.discriminator_losses)] * module.n_critic \
            if "discriminator" in networks else []
        updates.append(update("generator", module.generator_losses))

    def step() -> None:
        for optimizer, compute, frozen_parameters in updates:
            for parameter in frozen_parameters:
                parameter.requires_grad_(False)
            loss = compute()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for parameter in frozen_parameters:
                parameter.requires_grad_(True)
        for scheduler in schedulers:
            scheduler.step()
    return step


class CostProfiler:
    """Exclusive wall time of wrapped functions, summed per category into the current ``account``.

    ``wrap(category, owner, name)`` replaces ``owner.name`` (a class or module attribute) by a timing wrapper until
    :meth:`restore`. A wrapped call nested in another wrapped call is charged to its own category only.
    """

    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.account = "suite"
        self._stack: list[float] = []  # time spent in wrapped callees of each open wrapped call
        self._originals: list[tuple[Any, str, Any]] = []

    def wrap(self, category: str, owner: Any, name: str) -> None:
        original = owner.__dict__[name] if name in getattr(owner, "__dict__", {}) else getattr(owner, name)
        function = original.__func__ if isinstance(original, staticmethod | classmethod) else original
        profiler = self

        @wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            profiler._stack.append(0.0)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                inner = profiler._stack.pop()
                profiler.accounts[profiler.account][category] += elapsed - inner
                if profiler._stack:
                    profiler._stack[-1] += elapsed

        replacement = type(original)(timed) if isinstance(original, staticmethod | classmethod) else timed
        self._originals.append((owner, name, original))
        setattr(owner, name, replacement)

    def restore(self) -> None:
        for owner, name, original in reversed(self._originals):
            setattr(owner, name, original)
        self._originals = []


@contextmanager
def profiled(case_module: L.LightningModule) -> Iterator[CostProfiler]:
    """A :class:`CostProfiler` over the functions a training step of ``case_module``'s class calls."""
    profiler = CostProfiler()
    cls = type(case_module)
    targets = [("losses (forward)", cls, name) for name in ("discriminator_losses", "generator_losses",
                                                             "training_losses", "training_loss", "cached_features")
               if hasattr(cls, name)]
    targets += [("backward", torch.autograd, "backward"),
                *(("optimizer step", optimizer, "step")
                  for optimizer in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)),
                ("zero_grad", torch.optim.Optimizer, "zero_grad"),
                ("schedulers", torch.optim.lr_scheduler.LRScheduler, "step"),
                ("Lightning backward and optimizer step wrappers", L.LightningModule, "manual_backward"),
                ("Lightning backward and optimizer step wrappers", LightningOptimizer, "step"),
                ("optimizer toggle", L.LightningModule, "toggle_optimizer"),
                ("optimizer toggle", L.LightningModule, "untoggle_optimizer"),
                ("optimizer toggle", AdversarialModule, "_other_networks_parameters"),
                ("logging", L.LightningModule, "log"),
                ("logging", L.LightningModule, "log_dict"),
                ("logging", _LoggerConnector, "update_train_step_metrics"),
                ("divergence guard", DivergenceGuard, "check"),
                ("divergence guard", Verdict, "finite"),
                ("RNG", AdversarialModule, "_step_rng")]
    for category, owner, name in targets:
        profiler.wrap(category, owner, name)
    try:
        yield profiler
    finally:
        profiler.restore()


class PairedSteps(L.Callback):
    """Runs one bare step after every suite step; from batch ``warmup`` on, records both durations (suite: batch
    start to the next batch start or the end of training, less the bare step run in between) and lets ``profiler``
    charge the suite's and the bare step's calls to their accounts."""

    def __init__(self, bare: BareStep, warmup: int, profiler: CostProfiler | None = None) -> None:
        self.bare = bare
        self.warmup = warmup
        self.profiler = profiler or CostProfiler()
        self.profiler.account = "warm-up"
        self.suite: list[float] = []
        self.bare_times: list[float] = []
        self._start: float | None = None

    def _close_step(self) -> None:
        if self._start is not None:
            self.suite.append(time.perf_counter() - self._start - self.bare_times[-1])
            self._start = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._close_step()
        if trainer.fit_loop.total_batch_idx >= self.warmup:
            self.profiler.account = "suite"
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        account, self.profiler.account = self.profiler.account, "bare" if self._start is not None else "warm-up"
        start = time.perf_counter()
        self.bare()
        if self._start is not None:
            self.bare_times.append(time.perf_counter() - start)
        self.profiler.account = account

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_step()
        self.profiler.account = "warm-up"


@dataclass
class Overhead:
    """One model's figures in ms per step: medians of the timed pass, and the profiled pass's breakdown
    (category -> (suite, bare) means)."""

    name: str
    setting: str
    suite_ms: float
    bare_ms: float
    overhead_ms: float
    breakdown: dict[str, tuple[float, float]]


def _fit(case: Case, steps: int, callback: PairedSteps) -> None:
    module = case.build()
    updates = module.updates_per_batch if isinstance(module, AdversarialModule) else 1
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=updates * steps, logger=False, limit_val_batches=0,
                        callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, train_dataloaders=RepeatedBatch(case.batch, steps))


def measure(case: Case, steps: int, warmup: int, profile_steps: int) -> Overhead:
    """Medians over ``steps`` paired steps after ``warmup``, then a profiled pass of ``profile_steps``."""
    timed = PairedSteps(bare_step(case.build(), case.batch, case.losses), warmup)
    _fit(case, warmup + steps, timed)
    differences = [suite - bare for suite, bare in zip(timed.suite, timed.bare_times)]
    breakdown: dict[str, tuple[float, float]] = {}
    if profile_steps:
        with profiled(case.build()) as profiler:
            paired = PairedSteps(bare_step(case.build(), case.batch, case.losses), warmup, profiler)
            _fit(case, warmup + profile_steps, paired)
        count = len(paired.suite)
        suite, bare = profiler.accounts["suite"], profiler.accounts["bare"]
        for category in sorted(set(suite) | set(bare), key=lambda name: (name not in COMPUTE, name)):
            breakdown[category] = (1e3 * suite.get(category, 0.0) / count, 1e3 * bare.get(category, 0.0) / count)
        breakdown["Lightning loop and hooks (the rest)"] = (1e3 * sum(paired.suite) / count - sum(
            value for value, _ in breakdown.values()), 1e3 * sum(paired.bare_times) / count - sum(
            value for _, value in breakdown.values()))
    return Overhead(case.name, case.setting, 1e3 * statistics.median(timed.suite),
                    1e3 * statistics.median(timed.bare_times), 1e3 * statistics.median(differences), breakdown)


# ---- the models -----------------------------------------------------------------------------------------------------


def first_batch(datamodule: L.LightningDataModule) -> Batch:
    """The data module's first training batch, as its ``on_after_batch_transfer`` leaves it on the CPU."""
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)


def seeded(build: Callable[[], L.LightningModule]) -> Callable[[], L.LightningModule]:
    """``build`` under ``torch.manual_seed(0)``: every copy starts from the same weights."""
    def seeded_build() -> L.LightningModule:
        torch.manual_seed(0)
        return build()
    return seeded_build


def fashion_case(args: argparse.Namespace) -> Case:
    from datamodules.fashion import FashionCatalogueDataModule
    from genforecast.bench.fashion import _catalogue
    from lightning_modules.fashion_can import FashionCAN

    batch_size = args.batch_size or 16
    batch = first_batch(FashionCatalogueDataModule(str(_catalogue(args.fashion_root)), resolution=64,
                                                   batch_size=batch_size, val_fraction=0.05, num_workers=0))
    return Case("FashionCAN", f"64 px, batch {batch_size}, base width 16, D then G update",
                seeded(lambda: FashionCAN(resolution=64, base_channels=16)), batch)


def framegan_case(args: argparse.Namespace) -> Case:
    from genforecast.bench.framegan import _datamodule
    from genforecast.demo_data.cli import ensure_demo_dataset
    from lightning_modules.frame_gan import FrameGAN

    root = Path(os.environ.get("UCF101_ROOT") or ensure_demo_dataset("ucf101", args.data_root))
    batch_size = args.batch_size or 8
    batch = first_batch(_datamodule(root, batch_size, 0))
    return Case("FrameGAN Adv+GDL", f"32x32 patches, batch {batch_size}, width x0.02, D then G update, lr schedule",
                seeded(lambda: FrameGAN(width_multiplier=0.02, evaluate_baselines=False)), batch)


def _cityscapes_root(args: argparse.Namespace) -> Path:
    from genforecast.demo_data.cli import ensure_demo_dataset

    return Path(os.environ.get("CITYSCAPES_DATASET") or ensure_demo_dataset("cityscapes", args.data_root))


def s2s_case(args: argparse.Namespace) -> Case:
    from datamodules.segmentation_scores import SegmentationScoreDataModule
    from genforecast.bench.segforecast import _s2s_model, segmenter_file

    segmenter = segmenter_file()
    batch = first_batch(SegmentationScoreDataModule(
        str(_cityscapes_root(args)), str(segmenter), horizon="mid", num_inputs=4, frame_step=3,
        resolution=(128, 256), crop_size=64, batch_size=args.batch_size or 4, num_workers=0))
    return Case("S2S (SegForecastAR)", f"64x64 crops, batch {len(batch['scores'])}, width x0.125, autoregressive, "
                "3 steps",
                seeded(partial(_s2s_model, "autoregressive", 0.125, 64, segmenter, {})), batch)


def f2f_case(args: argparse.Namespace) -> Case:
    from genforecast.bench.f2f import CPU_RESOLUTION, detector_file, level_sizes, make_forecaster, stage_config
    from lightning_modules.f2f_forecaster import cached_feature_key
    from networks.f2f import FPN_CHANNELS

    detector = detector_file(CPU_RESOLUTION, on_gpu=False)
    config = stage_config("p5")
    frames = config["data"]["init_args"]["num_inputs"] + config["model"]["init_args"]["horizon_steps"]
    batch_size = args.batch_size or 4
    shape = (batch_size, frames, FPN_CHANNELS, *level_sizes(detector, CPU_RESOLUTION)["p5"])
    features = torch.randn(shape, generator=torch.Generator().manual_seed(0)).half()
    return Case("F2F forecaster", f"P5 from the feature cache, {'x'.join(map(str, CPU_RESOLUTION))} frames, "
                f"batch {batch_size}, width x0.125", seeded(partial(make_forecaster, detector, "p5", 0.125, {})),
                {cached_feature_key("p5"): features},
                lambda module, batch: sum(module.training_losses(module.cached_features(batch)).values()))


def joint_case(args: argparse.Namespace) -> Case:
    from genforecast.bench.joint import _datamodule, _model

    options = argparse.Namespace(resolution=(128, 256), crop_size=64, batch_size=args.batch_size or 4, num_workers=0)
    batch = first_batch(_datamodule(_cityscapes_root(args), options))
    return Case("Joint forecaster", f"64x64 crops, batch {options.batch_size}, width x0.125, autoregressive, 3 steps",
                seeded(partial(_model, "autoregressive", 0.125, {})), batch,
                lambda module, batch: module.training_loss(batch))


CASES = {"fashion": fashion_case, "framegan": framegan_case, "s2s": s2s_case, "f2f": f2f_case, "joint": joint_case}


# ---- report ---------------------------------------------------------------------------------------------------------


def format_overheads(results: list[Overhead], target_ms: float) -> str:
    lines = ["| model | setting | suite ms/step | bare ms/step | overhead ms/step | target <= "
             f"{target_ms:g} ms |", "|---|---|---|---|---|---|"]
    for result in results:
        lines.append(f"| {result.name} | {result.setting} | {result.suite_ms:.2f} | {result.bare_ms:.2f} | "
                     f"{result.overhead_ms:.2f} | {'met' if result.overhead_ms <= target_ms else 'missed'} |")
    return "\n".join(lines)


def format_breakdown(results: list[Overhead]) -> str:
    """Rows: categories; cells: suite / bare ms per step of the profiled pass."""
    categories = list(dict.fromkeys(category for result in results for category in result.breakdown))
    lines = ["| ms/step (suite / bare) | " + " | ".join(result.name for result in results) + " |",
             "|---|" + "---|" * len(results)]
    for category in categories:
        cells = []
        for result in results:
            suite, bare = result.breakdown.get(category, (0.0, 0.0))
            cells.append(f"{suite:.3f}" if category not in COMPUTE and not bare else f"{suite:.3f} / {bare:.3f}")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--steps", type=int, default=200, help="timed paired steps (after warm-up)")
    parser.add_argument("--profile-steps", type=int, default=50, help="steps of the profiled pass (0: none)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="every model's batch (default: FashionCAN 16, FrameGAN 8, the forecasters 4)")
    parser.add_argument("--target-ms", type=float, default=1.0)
    parser.add_argument("--data-root", default="data/demo",
                        help="demo root (used when UCF101_ROOT or CITYSCAPES_DATASET is not set)")
    parser.add_argument("--fashion-root", default="data/bench/fashion_catalogue",
                        help="catalogue to read when FASHION_CATALOGUE is not set (written there if missing)")


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in args.models:
        results.append(measure(CASES[name](args), args.steps, args.warmup, args.profile_steps))
    print(f"\nHost overhead per training step (cpu, {torch.get_num_threads()} thread(s), median of {args.steps} "
          "paired steps; suite = Trainer.fit, bare = the same losses, backward passes and optimiser steps)")
    print(format_overheads(results, args.target_ms))
    if args.profile_steps:
        print(f"\nWhere the suite step's time goes (exclusive ms/step over {args.profile_steps} profiled steps; "
              "one number: suite only)")
        print(format_breakdown(results))
