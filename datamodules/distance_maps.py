"""Cached distance-map representations of Cityscapes snippets: the inputs and targets of the JointForecaster.

Every cached frame of a split is turned once into the representation of :mod:`representations.distance_maps`
(the class of each pixel, its instance id and its representation value) and stored next to the sequence cache;
:class:`DistanceMapDataModule` serves it aligned with the frames, with the same crops. Where the frames' objects
come from (``source``):

* ``"annotations"``: the labels of every frame (the demo set's ``gtFine_sequence``; Cityscapes annotates one frame
  per snippet, so this source is for the demo and for oracle studies);
* ``"predictions"``: on real data, as in the paper, the frozen models' output: the semantic segmenter's argmax for
  every class, overwritten on the detector's instances (score >= ``instance_score_threshold``, painted in
  ascending score order) by their class and an instance id ``label_id * 1000 + k``.

Size: 3 bytes per pixel and frame instead of 38 for 19 float16 maps, so the 2,975 training snippets x 7 frames
at 128x256 take 4.1 GB instead of 52 GB; the 19 maps are expanded on the device (:func:`expand`).

The cache metadata names the source, the contour profile, the sequence cache's fingerprint and, for
predictions, the sha256 of both exported models and the threshold: a cache made otherwise is refused with a
:class:`datamodules.cache.CacheError` naming the key, and rebuilt under its own file name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.augment import to_unit_range
from datamodules.cache import CacheError, MappedArrayCache, read_cache_meta, write_array_cache
from datamodules.cityscapes import (
    CachedSequences,
    CityscapesSequenceDataModule,
    gather_windows,
)
from datamodules.segmentation_scores import file_sha256, resolve_device
from metrics.cityscapes_labels import INSTANCE_ID_OFFSET, NUM_EVALUATED_CLASSES, label_ids_to_train_ids
from networks.detector import detect, load_exported_detector
from networks.segmenter import load_exported_segmenter
from representations.distance_maps import CONTOUR_HEIGHT, CONTOUR_WIDTH, encode_frame

log = logging.getLogger(__name__)

DISTANCE_CACHE_KIND = "distance_maps"
DISTANCE_CACHE_VERSION = 1
Source = Literal["annotations", "predictions"]
PLANES = ("frame_classes", "frame_instances", "frame_values")


class FrameObjectsFromModels:
    """Per-frame classes and instances from a frozen segmenter and detector (the ``"predictions"`` source)."""

    def __init__(self, segmenter_weights: str | Path, detector_weights: str | Path, score_threshold: float,
                 device: torch.device, batch_size: int) -> None:
        self.segmenter = load_exported_segmenter(segmenter_weights).eval().to(device)
        self.detector = load_exported_detector(detector_weights).eval().to(device)
        self.score_threshold = score_threshold
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """uint8 trainIds and uint16 instance ids (N, h, w) of uint8 frames (N, 3, h, w)."""
        classes, instances = [], []
        for start in range(0, len(frames), self.batch_size):
            images = frames[start:start + self.batch_size].to(self.device)
            semantic = self.segmenter(to_unit_range(images)).argmax(dim=1)
            ids = torch.zeros_like(semantic)
            for index, detection in enumerate(detect(self.detector, images, self.score_threshold)):
                keep = detection["scores"] >= self.score_threshold
                order = detection["scores"][keep].argsort()
                for number, (mask, label_id) in enumerate(zip(detection["masks"][keep][order],
                                                              detection["labels"][keep][order]), start=1):
                    semantic[index][mask] = label_ids_to_train_ids(label_id)
                    ids[index][mask] = int(label_id) * INSTANCE_ID_OFFSET + number
            classes.append(semantic.to(torch.uint8).cpu().numpy())
            instances.append(ids.to(torch.int32).cpu().numpy().astype(np.uint16))
        return np.concatenate(classes), np.concatenate(instances)


def encode_frames(classes: np.ndarray, instances: np.ndarray, contour_height: float,
                  contour_width: float) -> np.ndarray:
    """float16 representation values (N, T, h, w) of trainIds and instance ids (N, T, h, w), frame by frame."""
    values = np.empty(classes.shape, dtype=np.float16)
    for sample in range(classes.shape[0]):
        for frame in range(classes.shape[1]):
            values[sample, frame] = encode_frame(classes[sample, frame], instances[sample, frame], contour_height,
                                                 contour_width)
    return values


def build_distance_cache(sequences: CachedSequences, cache_path: str | Path, meta: dict[str, Any],
                         frame_objects: FrameObjectsFromModels | None, contour_height: float,
                         contour_width: float, chunk_size: int = 32) -> None:
    """Encode every cached frame of ``sequences`` (opened on all cached frames, whole) and write the cache atomically.

    Objects come from the sequences' ``frame_labels``/``frame_instances`` when ``frame_objects`` is None, else
    from running it on the frames; ``chunk_size`` snippets are decoded at a time.
    """
    if frame_objects is None and not sequences.with_frame_labels:
        raise CacheError(f"{sequences.cache_path} has no per-frame labels: the 'annotations' source needs them "
                         f"(demo data written with gtFine_sequence); use source 'predictions' on Cityscapes")
    count = len(sequences)
    planes: dict[str, np.ndarray] = {}
    for start in range(0, count, chunk_size):
        batch = sequences[torch.arange(start, min(start + chunk_size, count))]
        if frame_objects is None:
            classes = batch["frame_labels"].numpy().astype(np.uint8)
            instances = batch["frame_instances"].numpy().astype(np.uint16)
        else:
            frames = batch["frames"]
            flat_classes, flat_instances = frame_objects(frames.flatten(0, 1))
            classes = flat_classes.reshape(frames.shape[:2] + flat_classes.shape[1:])
            instances = flat_instances.reshape(frames.shape[:2] + flat_instances.shape[1:])
        if not planes:
            planes = {"frame_classes": np.empty((count, *classes.shape[1:]), dtype=np.uint8),
                      "frame_instances": np.empty((count, *classes.shape[1:]), dtype=np.uint16),
                      "frame_values": np.empty((count, *classes.shape[1:]), dtype=np.float16)}
        stop = start + len(classes)
        planes["frame_classes"][start:stop] = classes
        planes["frame_instances"][start:stop] = instances
        planes["frame_values"][start:stop] = encode_frames(classes, instances, contour_height, contour_width)
    write_array_cache(cache_path, planes, meta)
    log.info("distance maps: wrote %d snippets x %d frames to %s", count, planes["frame_classes"].shape[1],
             cache_path)


class DistanceMapSequences(Dataset):
    """A :class:`CachedSequences` whose batches also carry the distance-map planes of the same frames and crops.

    Adds ``frame_classes`` uint8, ``frame_instances`` int32 and ``frame_values`` float16, all (B, T, h, w).
    """

    def __init__(self, sequences: CachedSequences, cache_path: Path, expect_meta: dict[str, Any]) -> None:
        self.sequences = sequences
        self._store = MappedArrayCache(cache_path, expect_meta)
        count = len(self._store.arrays()["frame_classes"])
        if count != len(sequences):
            raise CacheError(f"{cache_path} holds {count} snippets but the sequence cache {sequences.cache_path} "
                             f"has {len(sequences)}")

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = self.sequences[indices]
        sample_indices = batch["index"].numpy()
        windows = self.sequences.crop_windows(sample_indices)
        size = tuple(batch["frames"].shape[-2:])
        for name in PLANES:
            plane = gather_windows(self._store.arrays()[name], sample_indices, windows, size, self.sequences.frame_positions)
            batch[name] = torch.from_numpy(plane.astype(np.int32) if name == "frame_instances" else plane)
        return batch


class DistanceMapDataModule(CityscapesSequenceDataModule):
    """:class:`CityscapesSequenceDataModule` batches plus the distance-map planes of their frames.

    ``prepare_data`` (rank 0) builds the sequence caches, then the distance-map cache of each split unless a valid
    one exists: ``<cache_dir>/distance_maps_<split>_<source>_<model shas>_<sequences>.npz``.

    Prediction: ``predict_split`` batches carry the cached planes like validation batches; ``predict_frames``
    batches (unlabelled frames, so the ``"predictions"`` source only) get them on the model's device when they
    arrive there (:meth:`on_after_batch_transfer`), computed as the cache computes them.

    Args:
        source: ``"annotations"`` (every frame's labels; demo data) or ``"predictions"`` (segmenter + detector).
        segmenter_weights, detector_weights: exported models for the ``"predictions"`` source.
        instance_score_threshold: detections kept by the ``"predictions"`` source.
        contour_height, contour_width: the representation's contour profile (pixels at the cached resolution).
        extraction_device: ``"auto"`` (CUDA when available) or a torch device string; extraction_batch_size frames
            per forward pass.
        **kwargs: the arguments of :class:`CityscapesSequenceDataModule` (``load_all_frame_labels`` is set by the
            source).
    """

    def __init__(self, root: str, source: Source = "annotations", segmenter_weights: str | None = None,
                 detector_weights: str | None = None, instance_score_threshold: float = 0.5,
                 contour_height: float = CONTOUR_HEIGHT, contour_width: float = CONTOUR_WIDTH,
                 extraction_device: str = "auto", extraction_batch_size: int = 4, **kwargs: Any) -> None:
        if source not in ("annotations", "predictions"):
            raise ValueError(f"source must be 'annotations' or 'predictions', got {source!r}")
        kwargs["load_all_frame_labels"] = source == "annotations"
        super().__init__(root, **kwargs)
        if source == "predictions":
            missing = [name for name, value in (("segmenter_weights", segmenter_weights),
                                                ("detector_weights", detector_weights)) if not value]
            if missing:
                raise ValueError(f"source 'predictions' needs {' and '.join(missing)} (exported model files)")
            for path in (segmenter_weights, detector_weights):
                if not Path(path).is_file():
                    raise FileNotFoundError(f"{path} does not exist: the 'predictions' source needs the exported "
                                            f"segmenter and detector")
        self.source = source
        self.segmenter_weights = segmenter_weights
        self.detector_weights = detector_weights
        self.instance_score_threshold = instance_score_threshold
        self.contour_height = contour_height
        self.contour_width = contour_width
        self.extraction_device = extraction_device
        self.extraction_batch_size = extraction_batch_size
        self._model_shas: dict[str, str] | None = None
        self._predict_objects: FrameObjectsFromModels | None = None

    def model_shas(self) -> dict[str, str]:
        """sha256 of the exported models the ``"predictions"`` source reads (empty for annotations)."""
        if self._model_shas is None:
            self._model_shas = {} if self.source == "annotations" else {
                "segmenter_sha256": file_sha256(self.segmenter_weights),
                "detector_sha256": file_sha256(self.detector_weights)}
        return self._model_shas

    def distance_meta(self, split: str) -> dict[str, Any]:
        """The metadata the distance-map cache of ``split`` must match."""
        sequence_meta = self._cache_meta(split)
        meta = {"kind": DISTANCE_CACHE_KIND, "version": DISTANCE_CACHE_VERSION, "source": self.source,
                "contour_height": self.contour_height, "contour_width": self.contour_width,
                "split": split, "resolution": list(self.resolution), "frame_indices": list(self.cached_indices),
                "sequence_fingerprint": sequence_meta["fingerprint"], **self.model_shas()}
        if self.source == "predictions":
            meta["instance_score_threshold"] = self.instance_score_threshold
        return meta

    def distance_cache_path(self, split: str) -> Path:
        """The distance-map cache of ``split`` for this source, models and sequence cache."""
        height, width = self.resolution
        shas = "_".join(sha[:12] for sha in self.model_shas().values())
        fingerprint = self._cache_meta(split)["fingerprint"][:12]
        name = f"distance_maps_{split}_{height}x{width}_{self.source}{'_' + shas if shas else ''}_{fingerprint}"
        return self.cache_dir / f"{name}.npz"

    def prepare_data(self) -> None:
        """Build the sequence caches, then each split's distance-map cache unless a valid one exists (rank 0)."""
        super().prepare_data()
        frame_objects = None
        for split in self.prepared_splits():
            path, meta = self.distance_cache_path(split), self.distance_meta(split)
            try:
                read_cache_meta(path, meta)
                log.info("reusing distance maps %s", path)
                continue
            except CacheError as error:
                log.info("building distance maps of the %s split (%s)", split, error)
            if self.source == "predictions" and frame_objects is None:
                frame_objects = FrameObjectsFromModels(self.segmenter_weights, self.detector_weights,
                                                       self.instance_score_threshold, resolve_device(self.extraction_device),
                                                       self.extraction_batch_size)
            sequences = CachedSequences(self.cache_path(split), self._cache_meta(split),
                                        range(len(self.cached_indices)), crop_size=None)
            build_distance_cache(sequences, path, meta, frame_objects, self.contour_height, self.contour_width)

    def _with_distance_maps(self, sequences: Dataset | None, split: str) -> Dataset | None:
        if not isinstance(sequences, CachedSequences):
            return sequences
        try:
            return DistanceMapSequences(sequences, self.distance_cache_path(split), self.distance_meta(split))
        except CacheError as error:
            raise CacheError(f"{error} (prepare_data() builds the distance maps; the Trainer calls it before setup)"
                             ) from error

    def setup(self, stage: str | None = None) -> None:
        """Open the sequence caches (see the parent) and pair each with its split's distance maps."""
        if stage == "predict" and self.predict_frames is not None and self.source == "annotations":
            raise ValueError(f"predict_frames {self.predict_frames} holds unlabelled frames, but source 'annotations' "
                             "reads every frame's labels: use source 'predictions' with segmenter_weights and "
                             "detector_weights (the exported models find the frames' objects)")
        super().setup(stage)
        self.train_set = self._with_distance_maps(self.train_set, "train")
        self.val_set = self._with_distance_maps(self.val_set, "val")
        self.predict_set = self._with_distance_maps(self.predict_set, self.predict_split)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Give ``predict_frames`` batches (the only ones without cached planes) the planes of their frames, from the
        segmenter and detector run on the batch's device; other batches pass unchanged."""
        if "frame_values" in batch:
            return batch
        frames = batch["frames"]
        if self._predict_objects is None or self._predict_objects.device != frames.device:
            self._predict_objects = FrameObjectsFromModels(self.segmenter_weights, self.detector_weights,
                                                           self.instance_score_threshold, frames.device,
                                                           self.extraction_batch_size)
        classes, instances = self._predict_objects(frames.flatten(0, 1))
        classes = classes.reshape(frames.shape[:2] + classes.shape[1:])
        instances = instances.reshape(classes.shape)
        values = encode_frames(classes, instances, self.contour_height, self.contour_width)
        planes = {"frame_classes": classes, "frame_instances": instances.astype(np.int32), "frame_values": values}
        return batch | {name: torch.from_numpy(plane).to(frames.device) for name, plane in planes.items()}

    def describe(self) -> dict[str, Any]:
        """The parent's summary plus where the objects come from."""
        return {**super().describe(), "source": self.source, "num_classes": NUM_EVALUATED_CLASSES,
                "contour": [self.contour_height, self.contour_width]}
