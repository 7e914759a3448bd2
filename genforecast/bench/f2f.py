"""F2F per-level training steps (P5, P4, P3, P2): eager fp32 vs bf16-mixed + channels_last, bare, end to end with
on-the-fly extraction, and end to end from the feature cache.

For each level, real ``Trainer.fit`` runs of an :class:`F2FForecaster` with ``train_levels=[level]`` and that
stage's settings from ``configs/f2f/<level>.yaml`` (optimiser, learning rate, horizon, P2 scales), timed in
sequences/s, once as eager fp32 and once as bf16-mixed with the forecasting network in channels_last
(:class:`F2FForecaster` has no option for it, so the bench converts ``forecaster.network`` after construction):

* bare step: :meth:`F2FForecaster.training_losses` and the optimiser update on precomputed features: random
  (B, 5, 256, h, w) tensors of the shape the detector gives that level at ``--resolution``, made once on the
  training device and served every step without a copy. The detector does not run.
* end to end: the forecaster's own ``training_step`` on :class:`CityscapesSequenceDataModule` batches, so the
  frozen detector's feature extraction of the 5 frames of every sequence (and the loss guard and logging) is
  included.
* end to end, cached: the same on :class:`FPNFeatureDataModule` batches carrying that level's features, extracted
  once before the timed steps (into the data root's cache directory) and read from the memory-mapped cache in
  every step: the detector does not run, the data loading does.

The ratios end to end / bare step are the share of the step rate left once extraction, or reading the cache, is
paid.

Projected wall time of the paper's full schedule on 8 GPUs, from the measured per-level rates of each variant (bare
steps; end to end; end to end with P5, P4 and P3 read from the cache, as ``configs/f2f/feature_cache/coarse.yaml``
trains them):
``time = sum over stages of epochs x 2975 sequences x seconds per sequence / (8 GPUs x 0.9)``. Assumptions:

* stages P5, P4, P3, P2 (one level each, short term: 5 frames per sequence), then AR fine-tuning of all four levels
  (Luc et al., ECCV 2018). Lengths: ``trainer.max_epochs`` of ``configs/f2f/{p5,p4,p3,p2,ar_finetune}.yaml`` (80
  each); the paper states P5's only (80 epochs of 743 iterations of 4 sequences), the others are the configs'.
* an epoch is the 2975 Cityscapes training sequences;
* a per-level stage runs at that level's measured rate; an AR fine-tuning sequence costs 3 unrolled steps of every
  level (3 x the sum of the per-level seconds per sequence) plus, end to end, the extraction of 7 frames instead of
  5 (the measured end to end minus bare seconds per sequence, averaged over levels, x 7/5);
* 8 GPUs with data-parallel scaling efficiency 0.9; validation, checkpoints and the detector's own training are
  left out.

Detector: the export named by ``F2F_DETECTOR``; without one an untrained Mask R-CNN export sized to
``--resolution`` is written to ``outputs/bench`` (ResNet-50-FPN, the paper's, on GPUs; ResNet-18-FPN on the CPU),
its FPN outputs scaled to unit standard deviation (:func:`untrained_detector`). Its weights change the feature
values, not the step cost; the backbone sets the extraction cost.

On a CPU shared with other jobs, set ``OMP_NUM_THREADS`` to the cores actually free: oversubscribed OpenMP threads
make every operation wait for a time slice, and small steps then measure the scheduler.
"""

from __future__ import annotations

import argparse
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch

from datamodules.cityscapes import CityscapesSequenceDataModule
from datamodules.fpn_features import FPNFeatureDataModule
from genforecast.bench.common import EAGER_FP32, BenchResult, StepVariant, format_results, run_step_variants
from genforecast.config_files import read_config
from genforecast.demo_data.cli import ensure_demo_dataset
from lightning_modules.f2f_forecaster import FORECAST_LEVELS, F2FForecaster
from networks.detector import (
    FPN_LEVELS,
    FPNMaskRCNN,
    build_mask_rcnn,
    export_detector,
    fpn_features,
    load_exported_detector,
    read_detector_export,
)
from networks.f2f import FPN_CHANNELS

VARIANTS = [EAGER_FP32, StepVariant("bf16-mixed + channels_last", "bf16-mixed", {"channels_last": True})]
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "f2f"
SCHEDULE = ("p5", "p4", "p3", "p2", "ar_finetune")
CACHED_STAGES = ("p5", "p4", "p3")
"""The stages that read their level from the feature cache in the projection (a Cityscapes P2 cache is refused)."""
TRAIN_SEQUENCES = 2975
GPUS = 8
DDP_SCALING_EFFICIENCY = 0.9
PAPER_RESOLUTION = (1024, 2048)
CPU_RESOLUTION = (128, 256)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--levels", nargs="+", choices=FORECAST_LEVELS, default=list(FORECAST_LEVELS))
    parser.add_argument("--resolution", type=int, nargs=2, default=None,
                        help=f"frame size (default {PAPER_RESOLUTION[0]} {PAPER_RESOLUTION[1]} on a GPU, "
                             f"{CPU_RESOLUTION[0]} {CPU_RESOLUTION[1]} on the CPU)")
    parser.add_argument("--batch-size", type=int, default=4, help="sequences per step (the paper's 4)")
    parser.add_argument("--width-multiplier", type=float, default=1.0, help="1.0 = the paper's widths")
    parser.add_argument("--steps", type=int, default=50, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--data-root", default="data/demo", help="demo root (used when CITYSCAPES_DATASET is not set)")


def stage_config(stage: str) -> dict[str, Any]:
    """The composed ``configs/f2f/<stage>.yaml`` (interpolations are left as strings; only plain values are read)."""
    return read_config(CONFIGS / f"{stage}.yaml")


def detector_file(resolution: tuple[int, int], on_gpu: bool) -> Path:
    """``F2F_DETECTOR`` when it names a file; otherwise a (cached) untrained export sized to ``resolution``."""
    configured = os.environ.get("F2F_DETECTOR")
    if configured and Path(configured).is_file():
        description = read_detector_export(configured)["detector"]
        print(f"detector: {configured} ({description['architecture']}, frames scaled to a short side of "
              f"{description['min_size']}, long side at most {description['max_size']})")
        return Path(configured)
    backbone = "resnet50" if on_gpu else "resnet18"
    height, width = resolution
    path = Path(f"outputs/bench/untrained_detector_{backbone}_{height}x{width}.pt")
    if not path.is_file():
        export_detector(untrained_detector(backbone, resolution), path)
    reason = f"{configured} does not exist" if configured else "F2F_DETECTOR is not set"
    print(f"detector: untrained Mask R-CNN {backbone}-FPN export {path} ({reason}); random feature values, with "
          f"the shapes and extraction cost of a trained {backbone}-FPN detector")
    return path


@torch.no_grad()
def untrained_detector(backbone: str, resolution: tuple[int, int]) -> FPNMaskRCNN:
    """A randomly initialised Mask R-CNN for frames of ``resolution`` whose FPN outputs have unit standard deviation.

    An untrained backbone's features grow with depth (its frozen batch norms are identities); at that scale the
    configs' learning rates make the forecaster's loss overflow within a few steps. Each level's output convolution
    is divided by the standard deviation of its features on one random frame, which leaves the cost unchanged.
    """
    torch.manual_seed(0)
    height, width = resolution
    detector = build_mask_rcnn(backbone, min_size=height, max_size=width)
    frame = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8)
    features = fpn_features(detector, frame).features
    for level, output_block in zip(FPN_LEVELS, detector.backbone.fpn.layer_blocks):
        scale = features[level].std()
        output_block[0].weight /= scale
        output_block[0].bias /= scale
    return detector


def level_sizes(detector: Path, resolution: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """(h, w) of each FPN level the detector produces for a frame of ``resolution``."""
    pyramid = fpn_features(load_exported_detector(detector), torch.zeros((1, 3, *resolution), dtype=torch.uint8))
    return {level: tuple(pyramid.features[level].shape[-2:]) for level in FORECAST_LEVELS}


def make_forecaster(detector: Path, level: str, width_multiplier: float, options: dict[str, Any]) -> F2FForecaster:
    """The ``train_levels=[level]`` forecaster of that stage's config; ``channels_last`` converts its network."""
    config = stage_config(level)
    model = config["model"]["init_args"]
    forecaster = F2FForecaster(
        str(detector), expected_detector=model["expected_detector"], train_levels=[level],
        p2_scales=model["p2_scales"], width_multiplier=width_multiplier, mode=model["mode"],
        horizon_steps=model["horizon_steps"], num_input_frames=config["data"]["init_args"]["num_inputs"],
        optimizer=model["optimizer"], lr=model["lr"], momentum=model["momentum"], evaluate_baselines=False)
    if options.get("channels_last"):
        forecaster.network.to(memory_format=torch.channels_last)
    return forecaster


class FeatureForecastStep(L.LightningModule):
    """The bare F2F training step: the forecaster's losses on given features and its optimiser, no detector."""

    def __init__(self, forecaster: F2FForecaster) -> None:
        super().__init__()
        self.forecaster = forecaster

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return sum(self.forecaster.training_losses(batch).values())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.forecaster.configure_optimizers()


def make_bare_step(detector: Path, level: str, width_multiplier: float,
                   options: dict[str, Any]) -> FeatureForecastStep:
    return FeatureForecastStep(make_forecaster(detector, level, width_multiplier, options))


class RepeatedBatch:
    """A loader giving the same batch ``length`` times per epoch: no data cost in the step."""

    def __init__(self, batch: dict[str, torch.Tensor], length: int) -> None:
        self.batch = batch
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return itertools.repeat(self.batch, self.length)


class PrecomputedFeatures(L.LightningDataModule):
    """Random features ``{level: (B, T, 256, h, w)}`` made once on the training device, served every step."""

    def __init__(self, level: str, shape: tuple[int, ...], batches: int) -> None:
        super().__init__()
        self.level = level
        self.shape = shape
        self.batches = batches

    def train_dataloader(self) -> RepeatedBatch:
        device = self.trainer.strategy.root_device
        features = torch.randn(self.shape, generator=torch.Generator(device).manual_seed(0), device=device)
        return RepeatedBatch({self.level: features}, self.batches)


@dataclass(frozen=True)
class Schedule:
    """The paper's training schedule as the configs set it: epochs per stage, AR fine-tuning steps, frames."""

    epochs: dict[str, int]
    finetune_steps: int
    level_frames: int
    finetune_frames: int

    @classmethod
    def from_configs(cls) -> Schedule:
        configs = {stage: stage_config(stage) for stage in SCHEDULE}
        inputs = configs["ar_finetune"]["data"]["init_args"]["num_inputs"]
        finetune_steps = configs["ar_finetune"]["model"]["init_args"]["horizon_steps"]
        return cls(epochs={stage: config["trainer"]["max_epochs"] for stage, config in configs.items()},
                   finetune_steps=finetune_steps,
                   level_frames=inputs + configs["p5"]["model"]["init_args"]["horizon_steps"],
                   finetune_frames=inputs + finetune_steps)

    def finetune_seconds(self, bare_level_seconds: dict[str, float], extraction_seconds: float) -> float:
        """Seconds per AR fine-tuning sequence: every level unrolled, plus extraction of its frames.

        ``bare_level_seconds``: per level, seconds per sequence of a one-step bare step; ``extraction_seconds``:
        seconds to extract the features of a per-level stage's sequence (0 for bare steps).
        """
        return (self.finetune_steps * sum(bare_level_seconds.values())
                + extraction_seconds * self.finetune_frames / self.level_frames)

    def projected_seconds(self, level_seconds: dict[str, float], finetune_seconds: float) -> float:
        """Wall time of the whole schedule on ``GPUS`` GPUs at ``DDP_SCALING_EFFICIENCY``, from seconds per
        sequence of each per-level stage and of AR fine-tuning."""
        cost = {**level_seconds, "ar_finetune": finetune_seconds}
        sequences_seconds = sum(self.epochs[stage] * TRAIN_SEQUENCES * cost[stage] for stage in SCHEDULE)
        return sequences_seconds / (GPUS * DDP_SCALING_EFFICIENCY)


def projection_seconds(bare: dict[str, BenchResult], end_to_end: dict[str, BenchResult],
                       cached: dict[str, BenchResult]) -> tuple[float, float, float]:
    """Projected wall time of the paper's schedule on 8 GPUs from one variant's per-level results: (bare steps, end to
    end, end to end with P5/P4/P3 from the cache), in seconds (see the module docstring)."""
    schedule = Schedule.from_configs()
    bare_seconds, full_seconds, cached_seconds = ({level: 1 / result.samples_per_second
                                                   for level, result in results.items()}
                                                  for results in (bare, end_to_end, cached))
    extraction = sum(full_seconds[level] - bare_seconds[level] for level in bare) / len(bare)
    with_extraction = schedule.finetune_seconds(bare_seconds, extraction)
    coarse_cached = full_seconds | {stage: cached_seconds[stage] for stage in CACHED_STAGES}
    return (schedule.projected_seconds(bare_seconds, schedule.finetune_seconds(bare_seconds, 0.0)),
            schedule.projected_seconds(full_seconds, with_extraction),
            schedule.projected_seconds(coarse_cached, with_extraction))


def print_projection(bare: dict[str, list[BenchResult]], end_to_end: dict[str, list[BenchResult]],
                     cached: dict[str, list[BenchResult]], setting: str) -> None:
    """The projected wall time of the paper's schedule on 8 GPUs per variant (see the module docstring)."""
    schedule = Schedule.from_configs()
    print(f"\nProjected wall time of the paper's full schedule on {GPUS} GPUs (rates measured at {setting}):")
    print("| variant | bare steps | end to end (extraction included) | end to end, P5/P4/P3 from the cache |")
    print("|---|---|---|---|")
    for index, variant in enumerate(VARIANTS):
        projections = projection_seconds(*({level: runs[index] for level, runs in results.items()}
                                           for results in (bare, end_to_end, cached)))
        print(f"| {variant.name} | " + " | ".join(f"{seconds / 3600:,.1f} h ({seconds / 86400:.2f} days)"
                                                  for seconds in projections) + " |")
    epochs = ", ".join(str(schedule.epochs[stage]) for stage in SCHEDULE)
    print(f"assumptions: stages P5, P4, P3, P2, AR fine-tuning of {epochs} epochs (configs/f2f/*.yaml max_epochs; "
          f"the paper states only P5's: 80 epochs of 743 iterations of 4); {TRAIN_SEQUENCES} sequences per epoch; "
          f"AR fine-tuning = {schedule.finetune_steps} unrolled steps of every level per sequence plus extraction "
          f"of {schedule.finetune_frames} frames instead of {schedule.level_frames}; {GPUS} GPUs at "
          f"{DDP_SCALING_EFFICIENCY:.0%} data-parallel scaling efficiency; no validation, checkpoints, detector "
          f"training or feature extraction for the cache. The paper reports about 6 days of training.")


@dataclass(frozen=True)
class Setup:
    """Where and at what size the F2F steps run: the data root, the detector export, the frame size and each FPN
    level's (h, w) at that size."""

    root: Path
    detector: Path
    resolution: tuple[int, int]
    sizes: dict[str, tuple[int, int]]


def setup(args: argparse.Namespace) -> Setup:
    on_gpu = torch.cuda.is_available()
    resolution = tuple(args.resolution or (PAPER_RESOLUTION if on_gpu else CPU_RESOLUTION))
    root = Path(os.environ.get("CITYSCAPES_DATASET") or ensure_demo_dataset("cityscapes", args.data_root))
    detector = detector_file(resolution, on_gpu)
    return Setup(root, detector, resolution, level_sizes(detector, resolution))


def measure_level(where: Setup, level: str, args: argparse.Namespace, step_variants: list[StepVariant],
                  cached: bool = True) -> tuple[list[BenchResult], list[BenchResult], list[BenchResult]]:
    """One level's (bare, end to end, cached end to end) results of each variant (see the module docstring);
    ``cached=False`` leaves the last empty (no feature cache is written)."""
    config = stage_config(level)
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    shape = (args.batch_size, data["num_inputs"] + model["horizon_steps"], FPN_CHANNELS, *where.sizes[level])
    make_model = partial(make_forecaster, where.detector, level, args.width_multiplier)
    run_variants = partial(run_step_variants, variants=step_variants, samples_per_step=args.batch_size,
                           warmup=args.warmup, steps=args.steps, updates_per_step=1)
    bare = run_variants(partial(make_bare_step, where.detector, level, args.width_multiplier),
                        partial(PrecomputedFeatures, level, shape, args.warmup + args.steps))
    sequence_options = {"horizon": data["horizon"], "num_inputs": data["num_inputs"],
                        "frame_step": data["frame_step"], "resolution": where.resolution, "crop_size": None,
                        "batch_size": args.batch_size, "load_instances": data["load_instances"],
                        "num_workers": args.num_workers}
    end_to_end = run_variants(make_model, partial(CityscapesSequenceDataModule, str(where.root), **sequence_options))
    from_cache = run_variants(make_model, partial(FPNFeatureDataModule, str(where.root),
                                                  detector_weights=str(where.detector), cached_levels=[level],
                                                  **sequence_options)) if cached else []
    return bare, end_to_end, from_cache


def run(args: argparse.Namespace) -> None:
    where = setup(args)
    setting = f"{where.resolution[0]}x{where.resolution[1]}, batch {args.batch_size}, width x{args.width_multiplier}"
    bare, end_to_end, cached = {}, {}, {}
    for level in args.levels:
        bare[level], end_to_end[level], cached[level] = measure_level(where, level, args, VARIANTS)
        config = stage_config(level)
        frames = config["data"]["init_args"]["num_inputs"] + config["model"]["init_args"]["horizon_steps"]
        height, width = where.sizes[level]
        print(f"\nF2F {level.upper()} step ({config['model']['init_args']['optimizer']}), {setting}, "
              f"{level.upper()} features {FPN_CHANNELS}x{height}x{width}, {frames} frames per sequence")
        print("bare step (precomputed features, no detector):")
        print(format_results(bare[level], "sequence", rate_decimals=1))
        print("end to end (the frozen detector extracts the features in the step):")
        print(format_results(end_to_end[level], "sequence", rate_decimals=1))
        print(f"cached end to end (the step reads {level.upper()} from the feature cache, no detector):")
        print(format_results(cached[level], "sequence", rate_decimals=1))
        for name, results in (("end to end", end_to_end), ("cached end to end", cached)):
            ratios = ", ".join(f"{variant.name} {full.samples_per_second / step.samples_per_second:.2g}"
                               for variant, step, full in zip(VARIANTS, bare[level], results[level]))
            print(f"{name} / bare step (sequences/s): {ratios}")
    if set(bare) == set(FORECAST_LEVELS):
        print_projection(bare, end_to_end, cached, setting)
    else:
        print("\nprojection of the paper's schedule: needs all four levels (--levels p5 p4 p3 p2)")
