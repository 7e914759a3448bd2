"""Host overhead per training step: each model's step through ``Trainer.fit`` against a bare loop of the same work.

For every paper model (FashionCAN, FrameGAN, S2S, F2F, the joint forecaster) one real batch is taken from its
data module (F2F: random cached features of the shape its detector gives). Copies of the module, initialised
alike, then train on that batch:

* **suite**: ``Trainer.fit`` on a loader that yields the batch every step, with the benchmarks' trainer (no logger,
  progress bar or checkpoints; ``log_every_n_steps`` 50): the module's own ``training_step`` with its divergence
  guard, per-step random generator, logging, frozen parameters and schedulers, and Lightning's loop and hooks.
* **Lightning floor** (:class:`LightningFloor`): the same updates in a minimal LightningModule, through Lightning's
  ``manual_backward`` and ``LightningOptimizer.step`` (or automatic optimisation, as the forecasters train), and
  nothing else: what any Lightning step costs.
* **bare**: the same module's loss functions, backward passes, optimiser steps and schedulers in a plain loop
  (adversarial modules: each discriminator update then the generator update, the other network's parameters frozen
  by precomputed lists; one random generator for the whole run).

A bare step runs right after each suite (and floor) step, from a callback, so both see the same machine load; the
overhead is the median over steps of ``suite step - bare step``, Lightning's share the median of ``floor - bare``.
CPU only, one torch thread by default (the host is what is measured; on a GPU the same Python runs between kernel
launches). A third, shorter pass times where the suite step's time goes: every function :func:`profiled` lists is
wrapped by a timer that charges its exclusive time (its own time minus that of wrapped functions it calls) to a
category; what no wrapped function covers is Lightning's loop.
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

Batch = dict[str, Any]
BareStep = Callable[[], None]

COMPUTE = ("losses (forward)", "backward", "optimizer step", "zero_grad", "schedulers")
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


Update = tuple[Any, Callable[[Batch], torch.Tensor], list[torch.nn.Parameter]]
"""One optimiser update: (optimiser, the loss of a batch, the parameters frozen meanwhile)."""


def updates_of(module: L.LightningModule, optimizers: list[Any],
               losses: Callable[[L.LightningModule, Batch], torch.Tensor] | None) -> list[Update]:
    """The updates of one training step of ``module`` (see :class:`Case`); adversarial modules freeze the other
    network's parameters during each update (precomputed lists) and draw from one generator for the whole run."""
    if losses is not None:
        return [(optimizers[0], partial(losses, module), [])]
    rng = torch.Generator(device=module.device).manual_seed(0)
    networks = module.trained_networks
    optimizer_of = dict(zip(networks, optimizers))  # configure_optimizers: (generator's, discriminator's)

    def update(name: str, compute: Callable[[Batch, torch.Generator], dict[str, torch.Tensor]]) -> Update:
        others = [p for other in networks if other != name for p in getattr(module, other).parameters()]
        return optimizer_of[name], lambda batch: compute(batch, rng)["loss"], others

    updates = [update("discriminator", module.discriminator_losses)] * module.n_critic \
        if "discriminator" in networks else []
    return [*updates, update("generator", module.generator_losses)]


def run_updates(updates: list[Update], batch: Batch, backward: Callable[[torch.Tensor], None]) -> None:
    for optimizer, loss_of, frozen in updates:
        for parameter in frozen:
            parameter.requires_grad_(False)
        loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        backward(loss)
        optimizer.step()
        for parameter in frozen:
            parameter.requires_grad_(True)


def bare_step(module: L.LightningModule, batch: Batch,
              losses: Callable[[L.LightningModule, Batch], torch.Tensor] | None) -> BareStep:
    """The module's training work without Lightning (see the module docstring); ``module`` gets a bare Trainer for
    ``configure_optimizers`` that read ``max_steps``."""
    module.trainer = L.Trainer(max_steps=10**6, accelerator="cpu", logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, enable_model_summary=False)
    module.train()
    optimizers, scheduler_configs = _init_optimizers_and_lr_schedulers(module)
    updates = updates_of(module, optimizers, losses)

    def step() -> None:
        run_updates(updates, batch, torch.Tensor.backward)
        for config in scheduler_configs:
            config.scheduler.step()
    return step


class LightningFloor(L.LightningModule):
    """The least a Lightning step does with the same work: the module's updates (:func:`updates_of`) through
    ``manual_backward`` and ``LightningOptimizer.step`` (adversarial modules) or returned to automatic optimisation
    (the forecasters, as they train), and its schedulers; no divergence guard, logging or per-step generator.
    ``suite - floor`` is the suite's own host work, ``floor - bare`` Lightning's."""

    def __init__(self, module: L.LightningModule,
                 losses: Callable[[L.LightningModule, Batch], torch.Tensor] | None) -> None:
        super().__init__()
        self.module = module
        self.losses = losses
        self.automatic_optimization = losses is not None
        self._updates: list[Update] | None = None

    @property
    def updates_per_batch(self) -> int:
        return getattr(self.module, "updates_per_batch", 1)

    def configure_optimizers(self) -> Any:
        self.module.trainer = self.trainer
        return self.module.configure_optimizers()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        if self.automatic_optimization:
            return self.losses(self.module, batch)
        if self._updates is None:
            optimizers = self.optimizers()
            self._updates = updates_of(self.module, optimizers if isinstance(optimizers, list) else [optimizers],
                                       None)
        run_updates(self._updates, batch, self.manual_backward)
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()
        return None


class CostProfiler:
    """Exclusive wall time of wrapped functions, summed per category into the current ``account``.

    ``wrap(category, owner, name)`` replaces ``owner.name`` (a class or module attribute) by a timing wrapper until
    :meth:`restore`. A wrapped call nested in another wrapped call is charged to its own category only.
    """

    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.account = "suite"
        self._stack: list[float] = []  # time spent in wrapped callees of each open wrapped call
        self._originals: list[tuple[Any, str, Any]] = []  # (owner, name, own attribute or None if inherited)

    def wrap(self, category: str, owner: Any, name: str) -> None:
        own = getattr(owner, "__dict__", {}).get(name)
        original = own if own is not None else getattr(owner, name)
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
        self._originals.append((owner, name, own))
        setattr(owner, name, replacement)

    def restore(self) -> None:
        for owner, name, own in reversed(self._originals):
            if own is None:
                delattr(owner, name)  # it was inherited
            else:
                setattr(owner, name, own)
        self._originals = []


SUITE = "suite: "
LIGHTNING = "Lightning: "
REST = LIGHTNING + "loop and hooks (the rest)"


def _category_order(category: str) -> tuple[int, str]:
    """Compute first (in :data:`COMPUTE`'s order), then the suite's host work, then Lightning's, the rest last."""
    if category in COMPUTE:
        return COMPUTE.index(category), ""
    return len(COMPUTE) + (category == REST) + (not category.startswith(SUITE)), category


@contextmanager
def profiled(case_module: L.LightningModule) -> Iterator[CostProfiler]:
    """A :class:`CostProfiler` over the functions a training step of ``case_module``'s class calls: the compute
    both loops do, the suite's own host work, and Lightning's."""
    from lightning_modules.guard import DivergenceGuard, Verdict

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
                (SUITE + "training_step's own code", cls, "training_step"),
                (SUITE + "divergence guard", DivergenceGuard, "check"),
                (SUITE + "divergence guard", Verdict, "finite"),
                (SUITE + "RNG", AdversarialModule, "_step_rng"),
                (SUITE + "logging calls", L.LightningModule, "log"),
                (SUITE + "logging calls", L.LightningModule, "log_dict"),
                (SUITE + "optimizer toggle", L.LightningModule, "toggle_optimizer"),
                (SUITE + "optimizer toggle", L.LightningModule, "untoggle_optimizer"),
                (SUITE + "optimizer toggle", AdversarialModule, "_other_networks_parameters"),
                (LIGHTNING + "backward and optimizer-step wrappers", L.LightningModule, "manual_backward"),
                (LIGHTNING + "backward and optimizer-step wrappers", LightningOptimizer, "step"),
                (LIGHTNING + "logger connector", _LoggerConnector, "update_train_step_metrics")]
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
    """One model's figures in ms per step: medians of the timed passes (suite and floor, each paired with the bare
    loop), and the profiled pass's breakdown (category -> (suite, bare) means)."""

    name: str
    setting: str
    suite_ms: float
    floor_ms: float
    bare_ms: float
    overhead_ms: float
    lightning_ms: float
    breakdown: dict[str, tuple[float, float]]

    @property
    def own_ms(self) -> float:
        """The suite's own host work: its overhead less Lightning's."""
        return self.overhead_ms - self.lightning_ms


def _fit(module: L.LightningModule, batch: Batch, steps: int, callback: PairedSteps) -> None:
    updates = getattr(module, "updates_per_batch", 1)  # optimiser steps per batch (Lightning's max_steps counts them)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=updates * steps, logger=False, limit_val_batches=0,
                        callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, train_dataloaders=RepeatedBatch(batch, steps))


def _paired(case: Case, module: L.LightningModule, steps: int, warmup: int,
            profiler: CostProfiler | None = None) -> PairedSteps:
    paired = PairedSteps(bare_step(case.build(), case.batch, case.losses), warmup, profiler)
    _fit(module, case.batch, warmup + steps, paired)
    return paired


def _median_difference(paired: PairedSteps) -> float:
    return 1e3 * statistics.median(first - second for first, second in zip(paired.suite, paired.bare_times))


def measure(case: Case, steps: int, warmup: int, profile_steps: int) -> Overhead:
    """Medians over ``steps`` paired steps after ``warmup`` (suite, then Lightning's floor), then a profiled pass
    of ``profile_steps``."""
    timed = _paired(case, case.build(), steps, warmup)
    floor = _paired(case, LightningFloor(case.build(), case.losses), steps, warmup)
    breakdown: dict[str, tuple[float, float]] = {}
    if profile_steps:
        module = case.build()
        with profiled(module) as profiler:
            paired = _paired(case, module, profile_steps, warmup, profiler)
        count = len(paired.suite)
        suite, bare = profiler.accounts["suite"], profiler.accounts["bare"]
        for category in sorted(set(suite) | set(bare), key=_category_order):
            breakdown[category] = (1e3 * suite.get(category, 0.0) / count, 1e3 * bare.get(category, 0.0) / count)
        breakdown[REST] = (1e3 * sum(paired.suite) / count - sum(value for value, _ in breakdown.values()),
                           1e3 * sum(paired.bare_times) / count - sum(value for _, value in breakdown.values()))
    return Overhead(case.name, case.setting, 1e3 * statistics.median(timed.suite), 1e3 * statistics.median(floor.suite),
                    1e3 * statistics.median(timed.bare_times), _median_difference(timed), _median_difference(floor),
                    breakdown)


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

    batch_size = args.batch_size or 8
    batch = first_batch(FashionCatalogueDataModule(str(_catalogue(args.fashion_root)), resolution=64,
                                                   batch_size=batch_size, val_fraction=0.05, num_workers=0))
    return Case("FashionCAN", f"64 px, batch {batch_size}, base width 8, D then G update",
                seeded(lambda: FashionCAN(resolution=64, base_channels=8)), batch)


def framegan_case(args: argparse.Namespace) -> Case:
    from genforecast.bench.framegan import _datamodule, demo_root
    from lightning_modules.frame_gan import FrameGAN

    batch_size = args.batch_size or 8
    batch = first_batch(_datamodule(demo_root(args.data_root), batch_size, 0))
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
        resolution=(128, 256), crop_size=64, batch_size=args.batch_size or 1, num_workers=0))
    return Case("S2S (SegForecastAR)", f"64x64 crops, batch {len(batch['scores'])}, width x0.03125, "
                "autoregressive, 3 steps", seeded(partial(_s2s_model, "autoregressive", 0.03125, 64, segmenter, {})),
                batch)


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

    options = argparse.Namespace(resolution=(128, 256), crop_size=64, batch_size=args.batch_size or 1, num_workers=0)
    batch = first_batch(_datamodule(_cityscapes_root(args), options))
    return Case("Joint forecaster", f"64x64 crops, batch {options.batch_size}, width x0.03125, autoregressive, "
                "3 steps", seeded(partial(_model, "autoregressive", 0.03125, {})), batch,
                lambda module, batch: module.training_loss(batch))


CASES = {"fashion": fashion_case, "framegan": framegan_case, "s2s": s2s_case, "f2f": f2f_case, "joint": joint_case}


# ---- report ---------------------------------------------------------------------------------------------------------


def format_overheads(results: list[Overhead], target_ms: float) -> str:
    lines = ["| model | setting | suite ms/step | Lightning floor ms/step | bare ms/step | overhead (suite - bare) | "
             f"of which Lightning (floor - bare) | of which the suite's own | overhead <= {target_ms:g} ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        lines.append(f"| {result.name} | {result.setting} | {result.suite_ms:.2f} | {result.floor_ms:.2f} | "
                     f"{result.bare_ms:.2f} | {result.overhead_ms:.2f} | {result.lightning_ms:.2f} | "
                     f"{result.own_ms:.2f} | {'met' if result.overhead_ms <= target_ms else 'missed'} |")
    return "\n".join(lines)


def format_breakdown(results: list[Overhead]) -> str:
    """Rows: categories; cells: suite / bare ms per step of the profiled pass."""
    categories = sorted({category for result in results for category in result.breakdown}, key=_category_order)
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
    parser.add_argument("--steps", type=int, default=100, help="timed paired steps (after warm-up)")
    parser.add_argument("--profile-steps", type=int, default=30, help="steps of the profiled pass (0: none)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="every model's batch (default: FashionCAN and FrameGAN 8, F2F 4, S2S and joint 1: their steps are the slowest, and compute noise hides the overhead)")
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
        print(f"[bench overhead] {results[-1].name}: suite {results[-1].suite_ms:.2f} ms/step, overhead "
              f"{results[-1].overhead_ms:.2f} ms (Lightning {results[-1].lightning_ms:.2f})", flush=True)
    print(f"\nHost overhead per training step (cpu, {torch.get_num_threads()} thread(s), median of {args.steps} "
          "paired steps; suite = Trainer.fit, bare = the same losses, backward passes and optimiser steps)")
    print(format_overheads(results, args.target_ms))
    if args.profile_steps:
        print(f"\nWhere the suite step's time goes (exclusive ms/step over {args.profile_steps} profiled steps; "
              "one number: suite only)")
        print(format_breakdown(results))
