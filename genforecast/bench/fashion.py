"""FashionCAN G+D training steps from the training cache: eager fp32 vs bf16-mixed + channels_last.

Both runs are a real ``Trainer.fit`` (cache-backed loader, on-device jitter, divergence guard, logging) on
the same data, model and batch; throughput counts real images through one discriminator and one generator
update per step.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import lightning as L
import torch

from datamodules.fashion import FashionCatalogueDataModule
from genforecast.bench.common import BenchResult, StepTimer, dense_bf16_peak, format_results, peak_memory
from genforecast.demo_data.fashion import write_fashion_catalogue
from lightning_modules.fashion_can import FashionCAN

VARIANTS = [("eager fp32", "32-true", False), ("bf16-mixed + channels_last", "bf16-mixed", True)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--base-channels", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--data-root", default="data/bench/fashion_catalogue",
                        help="catalogue to read (a procedural one is written there if missing)")
    parser.add_argument("--only", choices=[name for name, _, _ in VARIANTS], action="append")


def _catalogue(root: str) -> Path:
    path = Path(os.environ.get("FASHION_CATALOGUE", root))
    if not (path / "labels.csv").is_file():
        staging = path.with_name(path.name + ".partial")
        write_fashion_catalogue(staging, images_per_combination=40)
        staging.rename(path)
    return path


def run(args: argparse.Namespace) -> None:
    root = _catalogue(args.data_root)
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    device_name, peak = dense_bf16_peak(device)
    results = []
    for name, precision, channels_last in VARIANTS:
        if args.only and name not in args.only:
            continue
        if device.type == "cuda":
            torch.cuda.empty_cache()
        datamodule = FashionCatalogueDataModule(str(root), resolution=args.resolution, batch_size=args.batch_size,
                                                val_fraction=0.05, num_workers=args.num_workers)
        model = FashionCAN(resolution=args.resolution, base_channels=args.base_channels, channels_last=channels_last)
        timer = StepTimer(args.warmup)
        trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, logger=False,
                            max_steps=2 * (args.warmup + args.steps), limit_val_batches=0, callbacks=[timer],
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            benchmark=device.type == "cuda")
        trainer.fit(model, datamodule=datamodule)
        results.append(BenchResult(name=name, samples_per_step=args.batch_size, steps=timer.timed_steps,
                                   seconds=timer.elapsed, step_flops=timer.step_flops,
                                   peak_memory_bytes=peak_memory(device), device_name=device_name, peak_flops=peak))
    print(f"\nFashionCAN G+D step, {args.resolution}px, batch {args.batch_size}, base width {args.base_channels}")
    print(format_results(results, "img"))
