"""Data pipelines at paper scale against what one GPU would consume: cache build, batch delivery, bytes, memory.

Every DataModule at its paper setting (the configs' resolution, crop, batch and horizon) on the paper-scale
procedural data (``genforecast demo-data --scale paper``, written on first use): Cityscapes-format snippets at
1024x2048, UCF101-format videos at 240x320 and 25 fps, fashion catalogues at 256 and 512 px. Each pipeline runs in a
fresh process (so its peak memory is its own), which measures:

* **cache build**: ``prepare_data`` from nothing (decoding, resizing, and for derived caches the frozen model's
  pass), in cached frames (fashion: images) per CPU-second of the process, i.e. per core busy, and wall seconds;
* **delivery**: training batches from ``train_dataloader()`` with 0, 1 and 2 worker processes, in samples per
  second after ``--warmup`` batches, over as many epochs as ``--batches`` needs;
* **bytes per sample** of a training batch (all its tensors) and the **peak resident memory** of the process and of
  its largest worker.

Next to them: the samples per second one GPU would consume at the H100 anchors (``../shared/reference/stack.md``
and the F2F arithmetic in docs/benchmarks.md; :data:`GPU_DEMAND` states each derivation), and so the
**cores per GPU** the pipeline needs, ``demand / rate with 0 workers`` (the main process alone is one core). A
pipeline needing more than 8 is flagged.

For F2F, also the memory-mapped feature cache's read rate at P3 (``ShardedArrayCache.gather`` of batches of 4 sequences
of 5 frames, 320 MiB a batch at 1024x2048) against the rate the P3 step reads it at (one such batch per step of
4 x 3.2 ms).

Models: the exports named by ``CITYSCAPES_SEGMENTER`` and ``F2F_DETECTOR`` or untrained stand-ins written to
``outputs/bench`` (the paper's ResNet-50-FPN detector); their weights change feature values, not costs. The joint
pipeline reads objects from the annotations (``source: annotations``; the paper setting reads them from the
segmenter and detector, whose untrained stand-ins would find an arbitrary number of objects).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import multiprocessing
import os
import resource
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

H100_DENSE_BF16 = 989.4e12
"""FLOP/s, the dense bf16 peak docs/benchmarks.md's F2F arithmetic uses (:data:`genforecast.bench.common.DENSE_BF16_PEAK`)."""
F2F_P3_SAMPLE_SECONDS = 2.13e12 / (0.67 * H100_DENSE_BF16)
"""A P3 training sample (2.13 TFLOP, docs/benchmarks.md's F2F arithmetic) at the anchor's 67% of the bf16 peak: 3.2 ms."""
F2F_EXTRACTION_FRAMES_PER_SECOND = 166.0
"""Anchor: torchvision Mask R-CNN R50-FPN backbone, 1024x2048, bf16 autocast, on one H100."""
FRAMEGAN_GRAPH_STEPS_PER_SECOND = 269.0
"""Anchor: Mathieu generator at the paper's widths, batch 8, 32x32, replayed as one CUDA graph."""
MAX_CORES_PER_GPU = 8


@dataclass(frozen=True)
class Demand:
    """Samples per second one GPU consumes in a setting, and how that figure follows from the anchors."""

    setting: str
    samples_per_second: float
    basis: str


GPU_DEMAND: dict[str, list[Demand]] = {
    "fashion_64": [Demand("FashionCAN 64 px", 12_000.0,
                          "issue target 12,000 img/s; anchor: DCGAN step with data on the GPU 11,454 img/s (batch 128)")],
    "fashion_256": [Demand("FashionCAN 256 px", 12_000.0 * (64 / 256) ** 2,
                           "the 64 px rate x (64/256)^2 (step cost taken as proportional to pixels)")],
    "fashion_512": [Demand("FashionCAN 512 px", 12_000.0 * (64 / 512) ** 2,
                           "the 64 px rate x (64/512)^2 (step cost taken as proportional to pixels)")],
    "ucf101": [Demand("FrameGAN batch 8", FRAMEGAN_GRAPH_STEPS_PER_SECOND * 8,
                      "anchor: 269 steps/s at batch 8 as one CUDA graph"),
               Demand("FrameGAN batch 256", 3_900.0, "anchor: about 15 steps/s at batch 256, 3,900 clips/s")],
    "s2s": [Demand("S2S batch 4", FRAMEGAN_GRAPH_STEPS_PER_SECOND * 4,
                   "a small multiscale step is launch-bound: FrameGAN's 269 steps/s (CUDA graph) x 4 sequences")],
    "joint": [Demand("joint batch 4", FRAMEGAN_GRAPH_STEPS_PER_SECOND * 4,
                     "launch-bound like S2S: 269 steps/s x 4 sequences")],
    "f2f_frames": [Demand("F2F end to end", F2F_EXTRACTION_FRAMES_PER_SECOND / 5,
                          "anchor: extraction at 166 frames/s, 5 frames per sequence (an upper bound: the step adds)")],
    "f2f_p3": [Demand("F2F P3 from the cache", 1 / F2F_P3_SAMPLE_SECONDS,
                      "P3 step: 2.13 TFLOP per sequence at 67% of 989 TFLOP/s = 3.2 ms")],
}
"""Per pipeline, the GPU settings it feeds (see the module docstring)."""


@dataclass(frozen=True)
class Models:
    """Exported model files the derived caches need."""

    segmenter: str
    detector: str


PAPER_CITYSCAPES = (1024, 2048)


def scaled(size: int, scale: int) -> int:
    """A paper size divided by ``scale`` (at least 1): ``--scale`` shrinks every pipeline for tests."""
    return max(1, size // scale)


def _fashion(catalogue: str, resolution: int) -> Callable[..., L.LightningDataModule]:
    def make(root: Path, models: Models, scale: int) -> L.LightningDataModule:
        from datamodules.fashion import FashionCatalogueDataModule

        return FashionCatalogueDataModule(str(root / catalogue), resolution=scaled(resolution, scale), batch_size=64,
                                          val_fraction=0.05)
    return make


def _ucf101(root: Path, models: Models, scale: int) -> L.LightningDataModule:
    from datamodules.ucf101 import UCF101DataModule

    return UCF101DataModule(str(root / "UCF101"), patch_size=scaled(32, scale), batch_size=8, eval_stride=1,
                            frame_size=(scaled(240, scale), scaled(320, scale)))


def _sequence_options(resolution: tuple[int, int], crop_size: int | None, horizon: str, scale: int) -> dict[str, Any]:
    return {"horizon": horizon, "resolution": (scaled(resolution[0], scale), scaled(resolution[1], scale)),
            "crop_size": None if crop_size is None else scaled(crop_size, scale), "batch_size": 4}


def _s2s(root: Path, models: Models, scale: int) -> L.LightningDataModule:
    from datamodules.segmentation_scores import SegmentationScoreDataModule

    return SegmentationScoreDataModule(str(root / "cityscapes"), segmenter_weights=models.segmenter,
                                       **_sequence_options((128, 256), 64, "mid", scale))


def _joint(root: Path, models: Models, scale: int) -> L.LightningDataModule:
    from datamodules.distance_map_planes import DistanceMapDataModule

    return DistanceMapDataModule(str(root / "cityscapes"), source="annotations", val_batch_size=4,
                                 **_sequence_options((128, 256), 64, "mid", scale))


def _f2f_frames(root: Path, models: Models, scale: int) -> L.LightningDataModule:
    from datamodules.cityscapes import CityscapesSequenceDataModule

    return CityscapesSequenceDataModule(str(root / "cityscapes"), val_batch_size=2, load_instances=True,
                                        **_sequence_options(PAPER_CITYSCAPES, None, "short", scale))


def _f2f_p3(root: Path, models: Models, scale: int) -> L.LightningDataModule:
    from datamodules.fpn_features import FPNFeatureDataModule

    return FPNFeatureDataModule(str(root / "cityscapes"), detector_weights=models.detector, cached_levels=["p3"],
                                val_batch_size=2, load_instances=True,
                                **_sequence_options(PAPER_CITYSCAPES, None, "short", scale))


@dataclass(frozen=True)
class Pipeline:
    """A DataModule at its paper setting: the paper-scale dataset it reads and how to build it (from the data root,
    the model files and the ``--scale`` divisor)."""

    name: str
    description: str
    dataset: str
    make: Callable[[Path, Models, int], L.LightningDataModule]


PIPELINES: dict[str, Pipeline] = {pipeline.name: pipeline for pipeline in (
    Pipeline("fashion_64", "FashionCatalogueDataModule 64 px, batch 64", "fashion_256",
             _fashion("fashion_catalogue_256", 64)),
    Pipeline("fashion_256", "FashionCatalogueDataModule 256 px, batch 64", "fashion_256",
             _fashion("fashion_catalogue_256", 256)),
    Pipeline("fashion_512", "FashionCatalogueDataModule 512 px, batch 64", "fashion_512",
             _fashion("fashion_catalogue_512", 512)),
    Pipeline("ucf101", "UCF101DataModule 32 px patches of 240x320, batch 8", "ucf101", _ucf101),
    Pipeline("s2s", "SegmentationScoreDataModule 128x256, 64 px crops, batch 4, mid", "cityscapes", _s2s),
    Pipeline("joint", "DistanceMapDataModule 128x256, 64 px crops, batch 4, mid", "cityscapes", _joint),
    Pipeline("f2f_frames", "CityscapesSequenceDataModule 1024x2048, batch 4, short", "cityscapes", _f2f_frames),
    Pipeline("f2f_p3", "FPNFeatureDataModule 1024x2048, P3 cached, batch 4, short", "cityscapes", _f2f_p3),
)}


def cached_frames(datamodule: L.LightningDataModule) -> int:
    """Frames (fashion: images) the pipeline's ``prepare_data`` writes to its caches, train and val together.

    Cityscapes pipelines: snippets x cached frames per split (derived caches hold one map per such frame; F2F's
    features are extracted for train only); clip pipelines: clips x frames per clip; catalogues: images.
    """
    from datamodules.cityscapes import CityscapesSequenceDataModule
    from datamodules.fashion import FashionCatalogueDataModule
    from datamodules.fpn_features import FPNFeatureDataModule

    if isinstance(datamodule, FashionCatalogueDataModule):
        return len(datamodule.train_set) + (len(datamodule.val_set) if datamodule.val_set is not None else 0)
    if isinstance(datamodule, CityscapesSequenceDataModule):
        splits = ("train",) if isinstance(datamodule, FPNFeatureDataModule) else ("train", "val")
        frames = len(datamodule.cached_indices)
        return sum(len(datamodule.samples(split)) for split in splits) * frames
    train_frames = len(datamodule.train_set) * (datamodule.num_inputs + datamodule.num_targets)
    eval_frames = len(datamodule.eval_set) * (datamodule.num_inputs + datamodule.eval_targets) \
        if datamodule.eval_set is not None else 0
    return train_frames + eval_frames


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _batch_bytes(batch: dict[str, Any]) -> int:
    return sum(value.numel() * value.element_size() for value in batch.values() if isinstance(value, torch.Tensor))


def delivery_rate(datamodule: L.LightningDataModule, num_workers: int, warmup: int, batches: int) -> float:
    """Training samples per second from ``datamodule.train_dataloader()`` with ``num_workers`` worker processes,
    over ``batches`` batches after ``warmup`` (epochs are chained with the sampler's ``set_epoch``)."""
    datamodule.num_workers = num_workers
    batch_stream = _epochs(datamodule.train_dataloader())
    for _ in range(warmup):
        next(batch_stream)
    samples, start = 0, time.perf_counter()
    for _ in range(batches):
        batch = next(batch_stream)
        samples += len(next(value for value in batch.values() if isinstance(value, torch.Tensor)))
    elapsed = time.perf_counter() - start
    batch_stream.close()  # ends the loader's worker processes
    gc.collect()
    return samples / elapsed


def _epochs(loader: torch.utils.data.DataLoader) -> Iterator[dict[str, Any]]:
    """The loader's batches, epoch after epoch (its sampler told each epoch, as Lightning does)."""
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader


def feature_read_rate(datamodule: L.LightningDataModule, batches: int) -> float:
    """Bytes per second of ``ShardedArrayCache.gather`` over ``batches`` shuffled training batches (memory-mapped reads
    into fresh arrays, as the loader does)."""
    dataset = datamodule.train_set
    generator = np.random.default_rng(0)
    read, start = 0, time.perf_counter()
    for _ in range(batches):
        indices = generator.permutation(len(dataset))[: datamodule.batch_size]
        features = dataset.outputs.gather(indices, dataset.sequences.frame_positions)
        read += sum(array.nbytes for array in features.values())
    return read / (time.perf_counter() - start)


def measure(name: str, root: str, models: Models, scale: int, worker_counts: tuple[int, ...], warmup: int,
            batches: int) -> dict[str, Any]:
    """Build one pipeline's caches and time its delivery (in a fresh process unless ``--no-isolate``)."""
    torch.set_num_threads(1)  # per core: the loaders' work is single-threaded, the extraction models get one core
    datamodule = PIPELINES[name].make(Path(root), models, scale)
    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
    datamodule.prepare_data()
    build_cpu, build_wall = _cpu_seconds() - cpu_start, time.perf_counter() - wall_start
    datamodule.setup("fit")
    result = {"name": name, "frames": cached_frames(datamodule), "build_cpu": build_cpu, "build_wall": build_wall}
    batch = next(iter(datamodule.train_dataloader()))
    result["bytes_per_sample"] = _batch_bytes(batch) / datamodule.batch_size
    result["rates"] = {workers: delivery_rate(datamodule, workers, warmup, batches) for workers in worker_counts}
    if name == "f2f_p3":
        result["feature_read_bytes_per_second"] = feature_read_rate(datamodule, batches)
        result["feature_bytes_per_batch"] = sum(
            array.nbytes for array in datamodule.train_set.outputs.gather(
                np.arange(datamodule.batch_size), datamodule.train_set.sequences.frame_positions).values())
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["peak_worker_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return result


def _clear_caches(root: Path, pipeline: Pipeline) -> None:
    """Remove the caches a pipeline would reuse, so that the build is timed from the raw files."""
    import shutil

    folder = {"fashion_256": "fashion_catalogue_256", "fashion_512": "fashion_catalogue_512", "ucf101": "UCF101",
              "cityscapes": "cityscapes"}[pipeline.dataset]
    shutil.rmtree(root / folder / ".genforecast_cache", ignore_errors=True)


def _models(resolution: tuple[int, int]) -> Models:
    """``CITYSCAPES_SEGMENTER`` and ``F2F_DETECTOR`` or untrained stand-ins (the paper's ResNet-50-FPN detector)."""
    from genforecast.bench.f2f import detector_file
    from genforecast.bench.segforecast import segmenter_file

    return Models(segmenter=str(segmenter_file()), detector=str(detector_file(resolution, on_gpu=True)))


def format_table(results: list[dict[str, Any]], worker_counts: tuple[int, ...]) -> str:
    """One row per (pipeline, GPU setting it feeds); see the module docstring for the columns."""
    rates = " | ".join(f"{workers} workers samples/s" for workers in worker_counts)
    lines = [f"| pipeline | cache build frames/s per core | build wall s | {rates} | bytes/sample | peak RSS | "
             "peak worker RSS | GPU setting | GPU samples/s | cores per GPU |",
             "|" + "---|" * (9 + len(worker_counts))]
    for result in results:
        pipeline = PIPELINES[result["name"]]
        single_core = result["rates"][min(worker_counts)]
        for demand in GPU_DEMAND[result["name"]]:
            cores = demand.samples_per_second / single_core
            flag = " (over 8)" if cores > MAX_CORES_PER_GPU else ""
            measured = " | ".join(f"{result['rates'][workers]:,.1f}" for workers in worker_counts)
            lines.append(
                f"| {pipeline.description} | {result['frames'] / result['build_cpu']:,.1f} | "
                f"{result['build_wall']:.1f} | {measured} | {result['bytes_per_sample']:,.0f} | "
                f"{result['peak_rss'] / 2**30:.2f} GiB | {result['peak_worker_rss'] / 2**30:.2f} GiB | "
                f"{demand.setting} | {demand.samples_per_second:,.1f} | {cores:,.2f}{flag} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipelines", nargs="+", choices=sorted(PIPELINES), default=list(PIPELINES))
    parser.add_argument("--root", default="data/paper",
                        help="paper-scale data root (written by `genforecast demo-data --scale paper` if missing)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts to time")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per worker count")
    parser.add_argument("--warmup", type=int, default=3, help="batches before timing (worker start-up included)")
    parser.add_argument("--keep-caches", action="store_true",
                        help="reuse existing caches (the build column then times validation only)")
    parser.add_argument("--scale", type=int, default=1,
                        help="divide every resolution, crop and patch by this (1 = the papers'; larger for tests)")
    parser.add_argument("--no-isolate", action="store_true",
                        help="measure every pipeline in this process (faster; peak memory is then cumulative)")


def run(args: argparse.Namespace) -> None:
    from genforecast.demo_data.cli import ensure_demo_dataset

    root = Path(args.root)
    pipelines = [PIPELINES[name] for name in args.pipelines]
    for dataset in sorted({pipeline.dataset for pipeline in pipelines}):
        ensure_demo_dataset(dataset, root, scale="paper")
    models = _models((scaled(PAPER_CITYSCAPES[0], args.scale), scaled(PAPER_CITYSCAPES[1], args.scale)))
    worker_counts = tuple(args.workers)
    results = []
    context = multiprocessing.get_context("spawn")
    for pipeline in pipelines:
        if not args.keep_caches:
            _clear_caches(root, pipeline)
        job = (pipeline.name, str(root), models, args.scale, worker_counts, args.warmup, args.batches)
        if args.no_isolate:
            results.append(measure(*job))
        else:
            with ProcessPoolExecutor(1, mp_context=context) as executor:
                results.append(executor.submit(measure, *job).result())
        print(f"{pipeline.name}: done", flush=True)
    print(f"\nData pipelines at paper scale ({root}; {os.cpu_count()} cores, load average "
          f"{', '.join(f'{load:.2f}' for load in os.getloadavg())}); {args.batches} timed batches after "
          f"{args.warmup}; cores per GPU = GPU samples/s / samples/s with {min(worker_counts)} workers")
    print(format_table(results, worker_counts))
    for demand in itertools.chain.from_iterable(GPU_DEMAND[result["name"]] for result in results):
        print(f"- {demand.setting}: {demand.basis}")
    for result in results:
        if "feature_read_bytes_per_second" in result:
            needed = result["feature_bytes_per_batch"] / (4 * F2F_P3_SAMPLE_SECONDS)
            rate = result["feature_read_bytes_per_second"]
            print(f"F2F P3 feature cache: memory-mapped reads at {rate / 2**30:,.2f} GiB/s "
                  f"({result['feature_bytes_per_batch'] / 2**20:,.0f} MiB per batch of 4); the P3 step reads "
                  f"{needed / 2**30:,.1f} GiB/s (one batch per {4 * F2F_P3_SAMPLE_SECONDS * 1e3:.1f} ms): "
                  f"{needed / rate:,.1f}x the measured rate")
