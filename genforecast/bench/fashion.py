"""FashionCAN G+D training steps from the training cache: eager fp32 vs bf16-mixed + channels_last (and, on CUDA,
the same as one whole-step CUDA graph: ``cuda_graph=True``).

Every run is a real ``Trainer.fit`` (cache-backed loader, on-device jitter, divergence guard, logging) on
the same data, model and batch; throughput counts real images through one discriminator and one generator
update per step.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from datamodules.fashion import FashionCatalogueDataModule
from genforecast.bench.common import (
    EAGER_FP32,
    BenchResult,
    StepVariant,
    format_results,
    graphed,
    run_step_variants,
    with_eager_flops,
)
from genforecast.demo_data.fashion import write_fashion_catalogue
from lightning_modules.fashion_can import FashionCAN

VARIANTS = [EAGER_FP32, StepVariant("bf16-mixed + channels_last", "bf16-mixed", {"channels_last": True})]
GRAPHED = graphed(VARIANTS[1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--base-channels", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--data-root", default="data/bench/fashion_catalogue",
                        help="catalogue to read (a procedural one is written there if missing)")


def _catalogue(root: str) -> Path:
    path = Path(os.environ.get("FASHION_CATALOGUE", root))
    if not (path / "labels.csv").is_file():
        staging = path.with_name(path.name + ".partial")
        write_fashion_catalogue(staging, images_per_combination=40)
        staging.rename(path)
    return path


def variants() -> list[StepVariant]:
    """The variants timed: eager fp32, bf16-mixed + channels_last, and on CUDA the same as one CUDA graph."""
    return VARIANTS + ([GRAPHED] if torch.cuda.is_available() else [])


def measure(args: argparse.Namespace, step_variants: list[StepVariant]) -> list[BenchResult]:
    """Timed ``Trainer.fit`` runs of each variant (see the module docstring); graphed steps count the eager FLOPs."""
    root = _catalogue(args.data_root)

    def make_model(options: dict) -> FashionCAN:
        return FashionCAN(resolution=args.resolution, base_channels=args.base_channels, **options)

    def make_datamodule() -> FashionCatalogueDataModule:
        return FashionCatalogueDataModule(str(root), resolution=args.resolution, batch_size=args.batch_size,
                                          val_fraction=0.05, num_workers=args.num_workers)

    results = run_step_variants(make_model, make_datamodule, step_variants, samples_per_step=args.batch_size,
                                warmup=args.warmup, steps=args.steps, updates_per_step=2)
    return with_eager_flops(results, step_variants)


def run(args: argparse.Namespace) -> None:
    results = measure(args, variants())
    print(f"\nFashionCAN G+D step, {args.resolution}px, batch {args.batch_size}, base width {args.base_channels}")
    print(format_results(results, "img"))
