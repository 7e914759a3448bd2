"""FrameGAN Adv+GDL training steps (32x32 patches) and the clip pipeline: eager fp32 vs bf16, channels_last, compile.

Three measurements, each a real ``Trainer.fit`` or loader pass on the procedural UCF101-format set (or
``UCF101_ROOT``): the paper's setting (batch 8), a large batch, and the data pipeline alone (clips/s from the
cache), which must stay well ahead of the step rate.

On CUDA more variants replay CUDA graphs: at batch 8 the step is bound by kernel launches, not by the GPU. Both
variants as one whole-step CUDA graph (``cuda_graph=True``: both updates, losses, guard and fused optimiser steps
in one replay), and ``torch.compile(mode="reduce-overhead")`` of the networks' forwards on bf16-mixed +
channels_last, whose warm-up steps include compilation (tens of seconds at the paper's widths). Without CUDA the
compiled variant is skipped unless ``--compile-on-cpu`` asks for ``compile_mode="default"`` (inductor's C++
kernels; compiling takes minutes on a few cores). Graph replays bypass the FLOP counter: their rows count the
eager step's FLOPs.
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial
from pathlib import Path

import torch

from datamodules.ucf101 import UCF101DataModule
from genforecast.bench.common import (
    EAGER_FP32,
    BenchResult,
    StepVariant,
    format_results,
    graphed,
    run_step_variants,
    with_eager_flops,
)
from genforecast.demo_data.cli import ensure_demo_dataset
from lightning_modules.frame_gan import FrameGAN

VARIANTS = [EAGER_FP32, StepVariant("bf16-mixed + channels_last", "bf16-mixed", {"channels_last": True})]


def compiled_variant(compile_mode: str) -> StepVariant:
    """bf16-mixed + channels_last with the networks' training forwards compiled in ``compile_mode``."""
    return StepVariant(f"bf16-mixed + channels_last + torch.compile({compile_mode})", "bf16-mixed",
                       {"channels_last": True, "compile_mode": compile_mode})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 256])
    parser.add_argument("--width-multiplier", type=float, default=1.0, help="1.0 = the paper's widths")
    parser.add_argument("--steps", type=int, default=100, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--data-root", default="data/demo", help="demo root (used when UCF101_ROOT is not set)")
    parser.add_argument("--compile-on-cpu", action="store_true",
                        help="without CUDA, also time torch.compile(mode='default') (compiling takes minutes)")


def _compiled_variants(compile_on_cpu: bool) -> list[StepVariant]:
    if torch.cuda.is_available():
        return [compiled_variant("reduce-overhead")]
    if compile_on_cpu:
        return [compiled_variant("default")]
    print("torch.compile variant skipped: no CUDA device (reduce-overhead needs CUDA graphs); "
          "--compile-on-cpu times compile_mode='default' on the CPU instead")
    return []


def graphed_variants() -> list[StepVariant]:
    """The whole-step CUDA graph (``cuda_graph=True``) of both variants, on CUDA."""
    return [graphed(variant) for variant in VARIANTS] if torch.cuda.is_available() else []


def _datamodule(root: Path, batch_size: int, num_workers: int) -> UCF101DataModule:
    return UCF101DataModule(str(root), batch_size=batch_size, num_workers=num_workers, eval_stride=1)


def _pipeline_clips_per_second(root: Path, batch_size: int, num_workers: int, batches: int) -> float:
    datamodule = _datamodule(root, batch_size, num_workers)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    clips, start, iterator = 0, None, iter(loader)
    for index in range(batches + 1):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        if index == 0:
            start = time.perf_counter()
            continue
        clips += batch["frames"].shape[0]
    return clips / (time.perf_counter() - start)


def demo_root(data_root: str) -> Path:
    return Path(os.environ.get("UCF101_ROOT") or ensure_demo_dataset("ucf101", data_root))


def measure(root: Path, batch_size: int, width_multiplier: float, step_variants: list[StepVariant],
            num_workers: int, warmup: int, steps: int) -> tuple[list[BenchResult], list[str]]:
    """Timed ``Trainer.fit`` runs of each variant at ``batch_size``, and the failures of the variants that compile."""
    def make_model(options: dict) -> FrameGAN:
        return FrameGAN(width_multiplier=width_multiplier, evaluate_baselines=False, **options)

    run_variants = partial(run_step_variants, make_model, partial(_datamodule, root, batch_size, num_workers),
                           samples_per_step=batch_size, warmup=warmup, steps=steps, updates_per_step=2)
    results, timed, failures = [], [], []
    for variant in step_variants:
        # A compiler failure (torch 2.11 fails on some compiled convolution backwards) is a result to report, not
        # a reason to lose the other rows.
        try:
            results += run_variants([variant])
            timed.append(variant)
        except Exception as error:
            if "compile_mode" not in variant.model_options:
                raise
            failures.append(f"{variant.name} failed: {type(error).__name__}: {str(error).strip()[:300]}")
    return with_eager_flops(results, timed), failures


def run(args: argparse.Namespace) -> None:
    root = demo_root(args.data_root)
    step_variants = VARIANTS + graphed_variants() + _compiled_variants(args.compile_on_cpu)
    for batch_size in args.batch_sizes:
        results, failures = measure(root, batch_size, args.width_multiplier, step_variants, args.num_workers,
                                    args.warmup, args.steps)
        print(f"\nFrameGAN Adv+GDL step, 32x32 patches, batch {batch_size}, width x{args.width_multiplier}")
        print(format_results(results, "clip"))
        for failure in failures:
            print(failure)
        step_rate = max(result.samples_per_second for result in results)
        pipeline = _pipeline_clips_per_second(root, batch_size, args.num_workers, batches=max(args.steps // 4, 5))
        print(f"data pipeline: {pipeline:,.0f} clips/s from the cache with {args.num_workers} workers "
              f"({pipeline / step_rate:.1f}x the fastest step's {step_rate:,.0f} clips/s)")
