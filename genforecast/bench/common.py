"""Shared benchmark machinery: time real training steps, count their FLOPs, report against a baseline.

Benchmarks run the same ``Trainer.fit`` a user runs (data loader, augmentation, every hook), once as the eager
fp32 baseline and once optimised, in the same process. Timing starts after ``warmup`` steps and
synchronises the device at both ends only, so asynchronous execution is measured as it happens in training.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, in FLOP/s.
DENSE_BF16_PEAK = {"H100 SXM": 989.4e12, "H100 PCIe": 756.0e12, "H100 NVL": 835.0e12, "H200": 989.4e12,
                   "A100": 312.0e12, "L40S": 362.1e12, "A10": 125.0e12, "RTX 4090": 165.2e12}


def dense_bf16_peak(device: torch.device) -> tuple[str, float | None]:
    """The device's name and its dense bf16 peak, when known."""
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    for key, peak in DENSE_BF16_PEAK.items():
        if all(part in name for part in key.split()):
            return name, peak
    if "H100" in name:
        return name, DENSE_BF16_PEAK["H100 SXM"]
    return name, None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(L.Callback):
    """Times training steps ``warmup`` .. end, counts the FLOPs of one step, records peak memory."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.steps_started = 0
        self.start_time: float | None = None
        self.timed_steps = 0
        self.elapsed = 0.0
        self.step_flops: int | None = None
        self._flop_counter: FlopCounterMode | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        step = self.steps_started
        self.steps_started += 1
        if step == self.warmup - 1:
            self._flop_counter = FlopCounterMode(display=False)
            self._flop_counter.__enter__()
        if step == self.warmup:
            _synchronize(pl_module.device)
            self.start_time = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._flop_counter is not None:
            self._flop_counter.__exit__(None, None, None)
            self.step_flops = self._flop_counter.get_total_flops()
            self._flop_counter = None
        if self.start_time is not None:
            self.timed_steps = self.steps_started - self.warmup

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module.device)
        if self.start_time is not None:
            self.elapsed = time.perf_counter() - self.start_time


@dataclass
class BenchResult:
    name: str
    samples_per_step: int
    steps: int
    seconds: float
    step_flops: int | None
    peak_memory_bytes: int
    device_name: str
    peak_flops: float | None

    @property
    def samples_per_second(self) -> float:
        return self.samples_per_step * self.steps / self.seconds

    @property
    def model_flop_utilisation(self) -> float | None:
        if self.peak_flops is None or not self.step_flops:
            return None
        return self.step_flops * self.steps / self.seconds / self.peak_flops


def peak_memory(device: torch.device) -> int:
    """Peak allocated device memory on CUDA; the process's peak resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def format_results(results: list[BenchResult], unit: str, rate_decimals: int = 0) -> str:
    """Table of results; speed-ups are relative to the first row (the eager fp32 baseline).

    ``rate_decimals``: decimals of the samples/s column (more for slow steps, e.g. on the CPU); at least enough that
    every rate shows two significant digits, so a slow step never reads as 0 samples/s.
    """
    baseline = results[0].samples_per_second
    slowest = min(result.samples_per_second for result in results)
    if slowest > 0:
        rate_decimals = max(rate_decimals, 1 - math.floor(math.log10(slowest)))
    header = f"| run | {unit}/s | speed-up | step GFLOP | MFU (dense bf16 peak) | peak memory | device |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for result in results:
        mfu = result.model_flop_utilisation
        rate = result.samples_per_second
        lines.append(
            f"| {result.name} | {rate:,.{rate_decimals}f} | {rate / baseline:.2f}x | "
            f"{(result.step_flops or 0) / 1e9:,.1f} | {'n/a' if mfu is None else f'{100 * mfu:.1f}%'} | "
            f"{result.peak_memory_bytes / 2**30:.2f} GiB | {result.device_name} |")
    return "\n".join(lines)


@dataclass
class StepVariant:
    """One way of running the same training step: a name, a Lightning precision and model options."""

    name: str
    precision: str
    model_options: dict[str, Any]


EAGER_FP32 = StepVariant("eager fp32", "32-true", {})


def graphed(variant: StepVariant) -> StepVariant:
    """``variant`` with the whole training step replayed as one CUDA graph (adversarial modules' ``cuda_graph``)."""
    return StepVariant(f"{variant.name} + CUDA graph", variant.precision, variant.model_options | {"cuda_graph": True})


def replays_graphs(variant: StepVariant) -> bool:
    return variant.model_options.get("cuda_graph", False) or variant.model_options.get("compile_mode") == \
        "reduce-overhead"


def with_eager_flops(results: list[BenchResult], variants: list[StepVariant]) -> list[BenchResult]:
    """``results`` with the step FLOPs of replayed CUDA graphs (which the dispatcher-level FLOP counter does not see)
    taken from the first variant that runs eagerly: the same step does the same FLOPs."""
    eager = next((result.step_flops for result, variant in zip(results, variants) if not replays_graphs(variant)),
                 None)
    return [replace(result, step_flops=eager) if replays_graphs(variant) else result
            for result, variant in zip(results, variants)]


def run_step_variants(make_model: Callable[[dict[str, Any]], L.LightningModule],
                      make_datamodule: Callable[[], L.LightningDataModule], variants: list[StepVariant],
                      samples_per_step: int, warmup: int, steps: int, updates_per_step: int) -> list[BenchResult]:
    """Fit each variant for ``warmup + steps`` training steps on a fresh model and data module; time the rest.

    ``updates_per_step`` converts steps into Lightning's ``max_steps`` (which counts optimiser updates).
    """
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    device_name, peak = dense_bf16_peak(device)
    results = []
    for variant in variants:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        timer = StepTimer(warmup)
        trainer = L.Trainer(accelerator=accelerator, devices=1, precision=variant.precision, logger=False,
                            max_steps=updates_per_step * (warmup + steps), limit_val_batches=0, callbacks=[timer],
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            benchmark=device.type == "cuda")
        trainer.fit(make_model(variant.model_options), datamodule=make_datamodule())
        results.append(BenchResult(name=variant.name, samples_per_step=samples_per_step, steps=timer.timed_steps,
                                   seconds=timer.elapsed, step_flops=timer.step_flops,
                                   peak_memory_bytes=peak_memory(device), device_name=device_name, peak_flops=peak))
    return results
