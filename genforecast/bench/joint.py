"""JointForecaster training steps (64x64 crops) and inference (forecast + instance decoding) per sequence.

Training: for each mode (``autoregressive``, ``ar_finetune``), a real ``Trainer.fit`` of :class:`JointForecaster` on
:class:`DistanceMapDataModule` (cached representation planes, random crops, 19 maps expanded on the device),
timed in sequences/s, once as eager fp32 and once as bf16-mixed with the network in channels_last.

Inference: the talk's "inference time" column. Whole validation frames at the evaluation resolution go through
the mid-term forecast (3 recursive steps) and the decoding (track linking, centroid extrapolation, watershed) on
the training device and the CPU respectively; seconds per sequence for each part.

Data: ``CITYSCAPES_DATASET`` (objects from the segmenter and detector named by ``CITYSCAPES_SEGMENTER`` and
``F2F_DETECTOR``) or the procedural demo set (objects from its per-frame annotations).
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial
from pathlib import Path

import torch

from datamodules.distance_map_planes import DistanceMapDataModule
from genforecast.bench.common import EAGER_FP32, StepVariant, format_results, run_step_variants
from genforecast.demo_data.cli import ensure_demo_dataset
from lightning_modules.joint_forecaster import JointForecaster

VARIANTS = [EAGER_FP32, StepVariant("bf16-mixed + channels_last", "bf16-mixed", {"channels_last": True})]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modes", nargs="+", choices=["autoregressive", "ar_finetune"],
                        default=["autoregressive", "ar_finetune"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, nargs=2, default=[128, 256], help="cached and evaluated size")
    parser.add_argument("--width-multiplier", type=float, default=0.65, help="0.65 = the paper's 0.8M parameters")
    parser.add_argument("--steps", type=int, default=50, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--inference-batches", type=int, default=2, help="validation batches timed for inference")
    parser.add_argument("--data-root", default="data/demo", help="demo root (used when CITYSCAPES_DATASET is not set)")


def _datamodule(root: Path, args: argparse.Namespace) -> DistanceMapDataModule:
    real = "CITYSCAPES_DATASET" in os.environ
    sources = {"source": "predictions", "segmenter_weights": os.environ.get("CITYSCAPES_SEGMENTER"),
               "detector_weights": os.environ.get("F2F_DETECTOR")} if real else {"source": "annotations"}
    return DistanceMapDataModule(str(root), horizon="mid", resolution=tuple(args.resolution),
                                 crop_size=args.crop_size, batch_size=args.batch_size,
                                 val_batch_size=args.batch_size, num_workers=args.num_workers, **sources)


def _model(mode: str, width_multiplier: float, options: dict) -> JointForecaster:
    return JointForecaster(mode=mode, width_multiplier=width_multiplier, evaluate_baselines=False, **options)


@torch.no_grad()
def inference_seconds(model: JointForecaster, datamodule: DistanceMapDataModule, batches: int,
                      device: torch.device) -> tuple[float, float, int]:
    """``(forecast seconds, decoding seconds, sequences)`` over ``batches`` whole-frame validation batches."""
    model.eval().to(device)
    datamodule.prepare_data()
    datamodule.setup("validate")
    forecast_time = decode_time = 0.0
    sequences = 0
    for index, batch in enumerate(datamodule.val_dataloader()):
        if index >= batches:
            break
        batch = {key: value.to(device) for key, value in batch.items()}
        start = time.perf_counter()
        forecast = model.forecast(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        middle = time.perf_counter()
        model.decode(batch, forecast)
        forecast_time += middle - start
        decode_time += time.perf_counter() - middle
        sequences += len(forecast)
    return forecast_time, decode_time, sequences


def run(args: argparse.Namespace) -> None:
    root = Path(os.environ.get("CITYSCAPES_DATASET") or ensure_demo_dataset("cityscapes", args.data_root))
    make_datamodule = partial(_datamodule, root, args)
    for mode in args.modes:
        results = run_step_variants(partial(_model, mode, args.width_multiplier), make_datamodule, VARIANTS,
                                    samples_per_step=args.batch_size, warmup=args.warmup, steps=args.steps,
                                    updates_per_step=1)
        print(f"\nJointForecaster {mode} step (mid term, 3 steps), {args.crop_size}x{args.crop_size} crops, "
              f"batch {args.batch_size}, width x{args.width_multiplier}")
        print(format_results(results, "sequence", rate_decimals=1))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _model("autoregressive", args.width_multiplier, {})
    forecast, decode, sequences = inference_seconds(model, make_datamodule(), args.inference_batches, device)
    height, width = args.resolution
    print(f"\ninference at {height}x{width}: {forecast / sequences * 1e3:.1f} ms/sequence forecast (3 steps, "
          f"{device.type}) + {decode / sequences * 1e3:.1f} ms/sequence instance decoding (cpu), "
          f"{sequences} sequences")
