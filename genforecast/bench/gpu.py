"""Every GPU figure the issues ask for, in one run, written to ``gpu_report.md`` and ``gpu_report.json``.

Made for one H100 or H200 and at most 8 minutes (``--budget-s``, default 480 s of wall time, data preparation
included): the groups below run in this order, each starting only when its estimate still fits the time left (a
group that does not is reported as not measured), and a group that fails is reported with its error while the
others still run. Every figure comes from the code of ``genforecast bench <model>`` (its ``measure`` functions:
the same ``Trainer.fit`` runs and tables), at these settings:

===============================  ==================================================================  =============
figure                           how                                                                 target
===============================  ==================================================================  =============
evaluation of 500 val images     ``bench eval``: CityscapesInstanceAP and SegmentationIoU on         seconds
                                 ``--eval-images`` synthetic 1024x2048 images (20 instances, 40      (< 60 s each)
                                 predictions each), seconds per image x 500
FrameGAN optimised vs eager      ``bench framegan`` at the paper's widths, batch 8: eager fp32,      >= 3x
                                 bf16-mixed + channels_last, both also as one whole-step CUDA graph
                                 (``cuda_graph``); the fastest over eager fp32
FrameGAN MFU, batch 256          the same variants at batch 256: the eager step's FLOPs over the     >= 50%
                                 dense bf16 peak, the best variant
FashionCAN img/s, 64 px, b128    ``bench fashion`` with its loader (cache, on-device jitter), base   >= 12,000
                                 width 64: the fastest variant
F2F MFU at P3 and P2             ``bench f2f``'s bare step (precomputed features), bf16-mixed +      >= 60%
                                 channels_last, 1024x2048, batch 4, the configs' stages
F2F end to end vs bare           ``bench f2f``'s end-to-end steps as the configs train them (P5,     <= 1.5x
                                 P4, P3 read from the feature cache, P2 with the detector in the
                                 step) over the bare step, the slowest level
8-GPU schedule projection        ``bench f2f``'s projection of the paper's schedule from the bf16    < 2 h
                                 rates, P5/P4/P3 from the cache
===============================  ==================================================================  =============

F2F runs bf16-mixed + channels_last only (every target is about it; ``make bench-f2f`` also times eager fp32),
levels P3 and P2 first (the MFU targets), then P5 and P4 (the projection needs all four). Data: the demo datasets
(``--data-root``), or ``UCF101_ROOT``, ``FASHION_CATALOGUE``, ``CITYSCAPES_DATASET`` and ``F2F_DETECTOR`` as the
other benchmarks read them.

It runs on the GPU machine as that machine is (python 3.12, torch 2.11, no wandb, omegaconf, jsonargparse or
pycocotools): nothing on this path imports them, and ``make bench-gpu`` puts the two imports the suite does need
there (PyAV and cityscapesscripts' label tables) on ``PYTHONPATH`` from wheels ``make gpu-wheels`` downloads here.

``--dry-run`` runs the same code at tiny shapes on any device (the CPU in ``make test``), so the script cannot rot;
its figures mean nothing and are marked so.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from genforecast.bench import eval as eval_bench
from genforecast.bench import f2f as f2f_bench
from genforecast.bench import fashion as fashion_bench
from genforecast.bench import framegan as framegan_bench
from genforecast.bench.common import BenchResult, StepVariant, dense_bf16_peak, format_results, graphed

EVAL_IMAGES = 500


@dataclass
class Measured:
    """What a group measured for one of its figures; ``met`` is None when it was not measured or its target does not
    apply (a dry run)."""

    value: float | None
    unit: str
    target: str
    met: bool | None
    detail: str


@dataclass
class Figure(Measured):
    """A figure of the report: what was measured, under the name its group gives it."""

    name: str


@dataclass
class Settings:
    """Sizes and step counts of every group: the paper's on a GPU, tiny ones for ``--dry-run``."""

    dry_run: bool
    data_root: str
    fashion_root: str
    eval_images: int
    eval_size: tuple[int, int]
    framegan_width: float
    framegan_batches: tuple[int, int]
    fashion: dict[str, int]
    f2f_resolution: tuple[int, int]
    f2f_batch: int
    f2f_width: float
    steps: int
    warmup: int
    f2f_steps: int
    f2f_warmup: int
    f2f_results: dict[str, tuple[BenchResult, BenchResult, BenchResult | None]] = field(default_factory=dict)
    """Per F2F level, the bf16 (bare, end to end, cached end to end) results, gathered across the level groups."""

    def target(self, met: bool) -> bool | None:
        return None if self.dry_run else met


def settings(args: argparse.Namespace) -> Settings:
    if args.dry_run:
        return Settings(True, args.data_root, args.fashion_root, 1, (64, 128), 0.02, (2, 4),
                        {"batch_size": 4, "resolution": 32, "base_channels": 8}, (64, 128), 1, 0.03125,
                        steps=1, warmup=1, f2f_steps=1, f2f_warmup=1)
    return Settings(False, args.data_root, args.fashion_root, args.eval_images, (1024, 2048), 1.0, (8, 256),
                    {"batch_size": 128, "resolution": 64, "base_channels": 64}, f2f_bench.PAPER_RESOLUTION, 4, 1.0,
                    steps=args.steps, warmup=args.warmup, f2f_steps=args.f2f_steps, f2f_warmup=args.f2f_warmup)


def step_variants(variants: list[StepVariant], config: Settings) -> list[StepVariant]:
    """``variants``, then each as one whole-step CUDA graph; a dry run times only the first and the last (every code
    path, half the fits)."""
    every = variants + [graphed(variant) for variant in variants]
    return [every[0], every[-1]] if config.dry_run else every


def _best(results: list[BenchResult], key: Callable[[BenchResult], float | None]) -> BenchResult:
    return max(results, key=lambda result: key(result) or 0.0)


def _mfu(result: BenchResult, target: float, config: Settings, detail: str) -> Measured:
    mfu = result.model_flop_utilisation
    return Measured(None if mfu is None else 100 * mfu, "%", f">= {target:.0%}",
                    None if mfu is None else config.target(mfu >= target), detail)


# ---- the groups (each returns its figures in the order its Group names them, and its tables) ------------------------

GroupRun = Callable[[Settings], tuple[list[Measured], str]]


def evaluation(config: Settings) -> tuple[list[Measured], str]:
    height, width = config.eval_size
    args = argparse.Namespace(images=config.eval_images, height=height, width=width, instances=20, predictions=40,
                              seed=0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="bench_gpu_eval_") as work_dir:
        rows = [eval_bench.time_instance_ap(args, device, Path(work_dir)),
                eval_bench.time_segmentation_iou(args, device, Path(work_dir))]
    return [Measured(row.suite_seconds * EVAL_IMAGES, "s", "seconds (< 60 s)",
                     config.target(row.suite_seconds * EVAL_IMAGES < 60),
                     f"{row.name}: {row.suite_seconds:.4f} s per {height}x{width} image ({row.items} timed), "
                     f"{device.type}") for row in rows], eval_bench.format_rows(rows, device.type)


def _framegan(config: Settings, batch_size: int) -> tuple[list[BenchResult], str]:
    results, _ = framegan_bench.measure(framegan_bench.demo_root(config.data_root), batch_size,
                                        config.framegan_width, step_variants(framegan_bench.VARIANTS, config),
                                        num_workers=0 if config.dry_run else 4,
                                        warmup=config.warmup, steps=config.steps)
    table = (f"FrameGAN Adv+GDL step, 32x32 patches, batch {batch_size}, width x{config.framegan_width}\n\n"
             f"{format_results(results, 'clip')}")
    return results, table


def framegan_small_batch(config: Settings) -> tuple[list[Measured], str]:
    batch_size = config.framegan_batches[0]
    results, table = _framegan(config, batch_size)
    best = _best(results, lambda result: result.samples_per_second)
    speed_up = best.samples_per_second / results[0].samples_per_second
    return [Measured(speed_up, "x", ">= 3x", config.target(speed_up >= 3),
                     f"batch {batch_size}, {best.name}: {best.samples_per_second:,.0f} clips/s vs eager fp32 "
                     f"{results[0].samples_per_second:,.0f}")], table


def framegan_large_batch(config: Settings) -> tuple[list[Measured], str]:
    batch_size = config.framegan_batches[1]
    results, table = _framegan(config, batch_size)
    best = _best(results, lambda result: result.model_flop_utilisation)
    return [_mfu(best, 0.5, config, f"batch {batch_size}, {best.name}: {best.samples_per_second:,.0f} clips/s, "
                 f"{(best.step_flops or 0) / 1e9:,.1f} GFLOP per step, {best.device_name}")], table


def fashion(config: Settings) -> tuple[list[Measured], str]:
    args = argparse.Namespace(data_root=config.fashion_root, num_workers=0, steps=config.steps, warmup=config.warmup,
                              **config.fashion)
    results = fashion_bench.measure(args, step_variants(fashion_bench.VARIANTS[1:], config))
    best = _best(results, lambda result: result.samples_per_second)
    table = (f"FashionCAN G+D step, {args.resolution}px, batch {args.batch_size}, base width {args.base_channels}"
             f"\n\n{format_results(results, 'img')}")
    return [Measured(best.samples_per_second, "img/s", ">= 12,000", config.target(best.samples_per_second >= 12_000),
                     f"{args.resolution} px, batch {args.batch_size}, {best.name}")], table


def f2f_level(level: str) -> GroupRun:
    """One F2F level's group: bare, end to end and (P5, P4, P3) cached end to end, bf16 + channels_last; the MFU
    (P3, P2) and the end-to-end ratio as the configs train the level."""
    def run(config: Settings) -> tuple[list[Measured], str]:
        args = argparse.Namespace(resolution=config.f2f_resolution, data_root=config.data_root,
                                  batch_size=config.f2f_batch, width_multiplier=config.f2f_width,
                                  steps=config.f2f_steps, warmup=config.f2f_warmup, num_workers=0)
        where = f2f_bench.setup(args)
        variant = f2f_bench.VARIANTS[1]
        bare, end_to_end, cached = f2f_bench.measure_level(where, level, args, [variant],
                                                           cached=level in f2f_bench.CACHED_STAGES)
        config.f2f_results[level] = (bare[0], end_to_end[0], cached[0] if cached else None)
        as_trained = cached[0] if cached else end_to_end[0]
        ratio = bare[0].samples_per_second / as_trained.samples_per_second
        figures = [Measured(ratio, "x", "<= 1.5x", config.target(ratio <= 1.5),
                            f"{'from the feature cache' if cached else 'detector in the step'}: "
                            f"{as_trained.samples_per_second:.2f} vs bare {bare[0].samples_per_second:.2f} "
                            "sequences/s")]
        if level in ("p3", "p2"):
            figures.insert(0, _mfu(bare[0], 0.6, config, f"bare step, {variant.name}, "
                                   f"{bare[0].samples_per_second:.2f} sequences/s, "
                                   f"{(bare[0].step_flops or 0) / 1e12:,.2f} TFLOP per step, {bare[0].device_name}"))
        height, width = where.resolution
        tables = [f"F2F {level.upper()} step, {height}x{width}, batch {args.batch_size}, width "
                  f"x{args.width_multiplier}, {variant.name}"]
        for name, results in (("bare step", bare), ("end to end", end_to_end), ("cached end to end", cached)):
            if results:
                tables.append(f"{name}:\n\n{format_results(results, 'sequence', rate_decimals=1)}")
        return figures, "\n\n".join(tables)
    return run


def projection(config: Settings) -> tuple[list[Measured], str]:
    missing = [level for level in f2f_bench.FORECAST_LEVELS if level not in config.f2f_results]
    if missing:
        raise RuntimeError(f"F2F levels {', '.join(missing)} were not measured")
    bare, end_to_end, cached = ({level: results[kind] for level, results in config.f2f_results.items()
                                 if results[kind] is not None} for kind in range(3))
    seconds = f2f_bench.projection_seconds(bare, end_to_end, cached)
    hours = seconds[2] / 3600
    return [Measured(hours, "h", "< 2 h", config.target(hours < 2),
                     f"bf16 rates; all bare steps {seconds[0] / 3600:.2f} h, all end to end "
                     f"{seconds[1] / 3600:.2f} h")], ""


@dataclass(frozen=True)
class Group:
    """Figures measured together, in this order; ``estimate_s``: its wall time on an H100, for the budget."""

    name: str
    estimate_s: float
    run: GroupRun
    figures: tuple[str, ...]


GROUPS = (
    Group("evaluation", 45, evaluation, (f"evaluation of {EVAL_IMAGES} val-sized images, instance AP",
                                         f"evaluation of {EVAL_IMAGES} val-sized images, semantic mIoU")),
    Group("FrameGAN batch 8", 60, framegan_small_batch, ("FrameGAN optimised vs eager, batch 8",)),
    Group("FrameGAN batch 256", 60, framegan_large_batch, ("FrameGAN MFU, batch 256",)),
    Group("FashionCAN", 75, fashion, ("FashionCAN img/s, 64 px, batch 128, with its loader",)),
    Group("F2F P3", 60, f2f_level("p3"), ("F2F MFU at P3", "F2F end to end vs bare, P3")),
    Group("F2F P2", 60, f2f_level("p2"), ("F2F MFU at P2", "F2F end to end vs bare, P2")),
    Group("F2F P5", 30, f2f_level("p5"), ("F2F end to end vs bare, P5",)),
    Group("F2F P4", 40, f2f_level("p4"), ("F2F end to end vs bare, P4",)),
    Group("F2F projection", 0, projection, ("F2F schedule on 8 GPUs (projection)",)),
)


# ---- the run and its report -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How a group went: ``measured``, ``not measured: ...`` (budget) or ``failed: ...``, and its tables."""

    name: str
    status: str
    seconds: float
    tables: str


def run_groups(config: Settings, budget_s: float) -> tuple[list[Figure], list[Outcome]]:
    start = time.perf_counter()
    figures, outcomes = [], []
    for group in GROUPS:
        elapsed = time.perf_counter() - start
        group_start = time.perf_counter()
        measured, tables = [], ""
        if not config.dry_run and elapsed + group.estimate_s > budget_s:
            status = f"not measured: {elapsed:.0f} s spent, {group.estimate_s:.0f} s more would pass {budget_s:.0f} s"
        else:
            try:
                measured, tables = group.run(config)
                status = "measured"
            except Exception as error:  # reported; the other groups still run
                status = f"failed: {type(error).__name__}: {' '.join(str(error).split())[:300]}"
                tables = "```\n" + traceback.format_exc()[-3000:] + "```"
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        seconds = time.perf_counter() - group_start
        print(f"[bench gpu] {group.name}: {status} ({seconds:.0f} s)", flush=True)
        outcomes.append(Outcome(group.name, status, seconds, tables))
        if not measured:
            measured = [Measured(None, "", "", None, status)] * len(group.figures)
        figures += [Figure(**vars(value) | {"value": None if value.value is None or not math.isfinite(value.value)
                                            else value.value}, name=name)
                    for name, value in zip(group.figures, measured)]
    return figures, outcomes


def _value(figure: Figure) -> str:
    if figure.value is None:
        return "not measured"
    digits = 2 if figure.unit in ("x", "h") else 1 if figure.unit in ("%", "s") else 0
    return f"{figure.value:,.{digits}f} {figure.unit}"


def environment(config: Settings, budget_s: float) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name, peak = dense_bf16_peak(device)
    return {"device": name, "dense_bf16_peak_tflops": None if peak is None else peak / 1e12,
            "torch": torch.__version__, "cuda": torch.version.cuda, "dry_run": config.dry_run, "budget_s": budget_s,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def write_report(out: Path, config: Settings, budget_s: float, figures: list[Figure], outcomes: list[Outcome],
                 seconds: float) -> tuple[Path, Path]:
    """``gpu_report.md`` (the figures against their targets, the groups, their tables) and ``gpu_report.json``."""
    out.mkdir(parents=True, exist_ok=True)
    env = environment(config, budget_s)
    dry = " **Dry run at tiny shapes: the figures mean nothing.**" if config.dry_run else ""
    lines = ["# GPU report (`genforecast bench gpu`)", "",
             f"{env['device']}, torch {env['torch']} (CUDA {env['cuda']}), {env['date']}; {seconds:.0f} s of a "
             f"{budget_s:.0f} s budget.{dry}", "",
             "| figure | value | target | met | how |", "|---|---|---|---|---|"]
    lines += [f"| {figure.name} | {_value(figure)} | {figure.target} | "
              f"{ {True: 'met', False: 'missed', None: 'n/a'}[figure.met]} | {figure.detail} |" for figure in figures]
    lines += ["", "| group | status | seconds |", "|---|---|---|"]
    lines += [f"| {outcome.name} | {outcome.status} | {outcome.seconds:.0f} |" for outcome in outcomes]
    lines += [line for outcome in outcomes if outcome.tables for line in ("", f"## {outcome.name}", "", outcome.tables)]
    markdown, report = out / "gpu_report.md", out / "gpu_report.json"
    markdown.write_text("\n".join(lines) + "\n")
    report.write_text(json.dumps({"environment": env, "seconds": seconds,
                                  "figures": [asdict(figure) for figure in figures],
                                  "groups": [asdict(outcome) for outcome in outcomes]}, indent=1) + "\n")
    return markdown, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny shapes on any device: the code runs, the figures mean nothing")
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall time for every group (default 8 min)")
    parser.add_argument("--out", default="outputs/bench", help="folder of gpu_report.md and gpu_report.json")
    parser.add_argument("--data-root", default="data/demo",
                        help="demo root (used when UCF101_ROOT or CITYSCAPES_DATASET is not set)")
    parser.add_argument("--fashion-root", default="data/bench/fashion_catalogue",
                        help="catalogue to read when FASHION_CATALOGUE is not set (written there if missing)")
    parser.add_argument("--eval-images", type=int, default=16, help="synthetic images timed (x 500 reported)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps of FrameGAN and FashionCAN")
    parser.add_argument("--warmup", type=int, default=10,
                        help="warm-up steps (more than the whole-step graph's 3 eager steps and its capture)")
    parser.add_argument("--f2f-steps", type=int, default=20)
    parser.add_argument("--f2f-warmup", type=int, default=3)


def run(args: argparse.Namespace) -> None:
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("bench gpu needs a CUDA device; --dry-run runs the same code at tiny shapes on the CPU")
    config = settings(args)
    start = time.perf_counter()
    figures, outcomes = run_groups(config, args.budget_s)
    markdown, report = write_report(Path(args.out), config, args.budget_s, figures, outcomes,
                                    time.perf_counter() - start)
    print(markdown.read_text())
    print(f"written: {markdown} and {report}")
