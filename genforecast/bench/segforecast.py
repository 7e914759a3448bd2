"""SegForecastAR S2S training steps (64x64 crops) and the validation metrics: eager fp32 vs bf16-mixed + channels_last.

Training: for each mode (``autoregressive``: every one-step window of the mid-term sequence, detached; and
``ar_finetune``: the 3 steps unrolled with backpropagation through time), a real ``Trainer.fit`` of
:class:`SegForecastAR` on :class:`SegmentationScoreDataModule` (cached segmenter scores, random crops), timed in
sequences/s, once as eager fp32 and once as bf16-mixed with the networks in channels_last.

Evaluation: the rate of the validation metrics alone, i.e. :class:`SegmentationIoU` updates (model and copy-last
segmentations, each against the ground truth and the segmenter's labels, with the argmax that turns score maps into
segmentations) over ``--val-sequences`` random (prediction, label) pairs at the evaluation resolution, then
``compute``, on the training device. The optical-flow baseline is not included.

Data: ``CITYSCAPES_DATASET`` or the procedural demo set. Segmenter: the export named by ``CITYSCAPES_SEGMENTER``;
without one, an untrained LR-ASPP MobileNetV3 export is written to ``outputs/bench`` (its weights change the score
values, not the forecaster's step time).
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial
from pathlib import Path

import torch

from datamodules.segmentation_scores import SegmentationScoreDataModule
from genforecast.bench.common import EAGER_FP32, StepVariant, format_results, run_step_variants
from genforecast.demo_data.cli import ensure_demo_dataset
from lightning_modules.seg_forecast import REFERENCES, SegForecastAR
from metrics.cityscapes_labels import NUM_EVALUATED_CLASSES as NUM_CLASSES
from metrics.segmentation import SegmentationIoU
from networks.segmenter import SegmentationNetwork, export_segmenter

VARIANTS = [EAGER_FP32, StepVariant("bf16-mixed + channels_last", "bf16-mixed", {"channels_last": True})]
UNTRAINED_SEGMENTER = Path("outputs/bench/untrained_segmenter_lraspp_mobilenet_v3_large.pt")
IGNORED_LABEL = 255
IGNORED_FRACTION = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modes", nargs="+", choices=["autoregressive", "ar_finetune"],
                        default=["autoregressive", "ar_finetune"])
    parser.add_argument("--batch-size", type=int, default=4, help="sequences per step (the paper's 4)")
    parser.add_argument("--crop-size", type=int, default=64, help="training crops (the paper's 64x64)")
    parser.add_argument("--resolution", type=int, nargs=2, default=[128, 256],
                        help="cached frame size, also the evaluation resolution (the paper's 128x256)")
    parser.add_argument("--width-multiplier", type=float, default=1.0, help="1.0 = the paper's widths")
    parser.add_argument("--steps", type=int, default=100, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--val-sequences", type=int, default=500, help="sequences scored (Cityscapes val: 500)")
    parser.add_argument("--val-batch-size", type=int, default=4)
    parser.add_argument("--data-root", default="data/demo", help="demo root (used when CITYSCAPES_DATASET is not set)")


def segmenter_file() -> Path:
    """``CITYSCAPES_SEGMENTER`` when it names a file; otherwise a (cached) untrained export, saying so."""
    configured = os.environ.get("CITYSCAPES_SEGMENTER")
    if configured and Path(configured).is_file():
        print(f"segmenter: {configured}")
        return Path(configured)
    if not UNTRAINED_SEGMENTER.is_file():
        torch.manual_seed(0)
        export_segmenter(SegmentationNetwork("lraspp_mobilenet_v3_large", NUM_CLASSES), UNTRAINED_SEGMENTER)
    reason = f"{configured} does not exist" if configured else "CITYSCAPES_SEGMENTER is not set"
    print(f"segmenter: untrained LR-ASPP MobileNetV3 export {UNTRAINED_SEGMENTER} ({reason}); its scores only feed "
          f"the timing, the forecaster's step cost does not depend on them")
    return UNTRAINED_SEGMENTER


def metric_seconds(num_sequences: int, resolution: tuple[int, int], batch_size: int, device: torch.device) -> float:
    """Seconds to score ``num_sequences`` random sequences as the validation step does, then compute the metrics.

    Per batch: argmax of a forecast score map (the model) and of the last input's scores (copy-last), each added to
    a :class:`SegmentationIoU` against the ground truth and against the segmenter's labels; then ``compute`` of all
    four. Random inputs are made before the clock starts.
    """
    generator = torch.Generator(device).manual_seed(0)
    height, width = resolution
    labels = {}
    for reference in REFERENCES:
        classes = torch.randint(0, NUM_CLASSES, (num_sequences, height, width), generator=generator, device=device)
        ignored = torch.rand((num_sequences, height, width), generator=generator, device=device) < IGNORED_FRACTION
        labels[reference] = torch.where(ignored, IGNORED_LABEL, classes).to(torch.uint8)
    score_maps = {predictor: torch.randn((batch_size, NUM_CLASSES, height, width), generator=generator, device=device)
                  for predictor in ("model", "copy_last")}
    metrics = {(predictor, reference): SegmentationIoU().to(device)
               for predictor in score_maps for reference in REFERENCES}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for first in range(0, num_sequences, batch_size):
        count = min(batch_size, num_sequences - first)
        segmentations = {predictor: scores[:count].argmax(dim=1) for predictor, scores in score_maps.items()}
        for (predictor, reference), metric in metrics.items():
            metric.update(segmentations[predictor], labels[reference][first:first + count].long())
    for metric in metrics.values():
        metric.compute()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _s2s_model(mode: str, width_multiplier: float, crop_size: int, segmenter: Path, options: dict) -> SegForecastAR:
    return SegForecastAR(modality="S2S", architecture="multiscale", mode=mode, horizon_steps=3,
                         width_multiplier=width_multiplier, crop_size=crop_size, segmenter_weights=str(segmenter),
                         evaluate_baselines=False, **options)


def run(args: argparse.Namespace) -> None:
    root = Path(os.environ.get("CITYSCAPES_DATASET") or ensure_demo_dataset("cityscapes", args.data_root))
    segmenter = segmenter_file()

    def make_datamodule() -> SegmentationScoreDataModule:
        return SegmentationScoreDataModule(str(root), str(segmenter), horizon="mid", num_inputs=4, frame_step=3,
                                           resolution=tuple(args.resolution), crop_size=args.crop_size,
                                           batch_size=args.batch_size, num_workers=args.num_workers)

    for mode in args.modes:
        make_model = partial(_s2s_model, mode, args.width_multiplier, args.crop_size, segmenter)
        results = run_step_variants(make_model, make_datamodule, VARIANTS, samples_per_step=args.batch_size,
                                    warmup=args.warmup, steps=args.steps, updates_per_step=1)
        print(f"\nSegForecastAR S2S {mode} step (mid term, 3 steps), {args.crop_size}x{args.crop_size} crops, "
              f"batch {args.batch_size}, width x{args.width_multiplier}")
        print(format_results(results, "sequence", rate_decimals=1))

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seconds = metric_seconds(args.val_sequences, tuple(args.resolution), args.val_batch_size, device)
    height, width = args.resolution
    print(f"\n{args.val_sequences} val sequences: metrics in {seconds:.2f} s ({args.val_sequences / seconds:,.0f} "
          f"sequences/s; model and copy-last vs ground truth and segmenter, {height}x{width}, batches of "
          f"{args.val_batch_size}, {device.type})")
