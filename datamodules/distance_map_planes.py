"""Cached distance-map representations of Cityscapes snippets: the inputs and targets of the JointForecaster.

Every cached frame of a split is turned once into the representation of :mod:`representations.distance_map_encoding`
(the class of each pixel, its instance id and its representation value) and stored next to the sequence cache;
:class:`DistanceMapDataModule` serves it aligned with the frames, with the same crops. Where the frames' objects
come from (``source``):

* ``"annotations"``: the labels of every frame (the demo set's ``gtFine_sequence``; Cityscapes annotates one frame
  per snippet, so this source is for the demo and for oracle studies);
* ``"predictions"``: on real data, as in the paper, the frozen models' output: the semantic segmenter's argmax for
  every class, overwritten on the detector's instances (score >= ``instance_score_threshold``, painted in
  ascending score order) by their class and an instance id ``label_id * 1000 + k``.

Size: 3 bytes per pixel and frame instead of 38 for 19 float16 maps, so the 2,975 training snippets x 7 frames
at 128x256 take 4.1 GB instead of 52 GB; the 19 maps are expanded on the device
(:func:`representations.distance_map_encoding.expand`).

The cache (:mod:`datamodules.frame_outputs`) records the source, the contour profile and, for predictions, the
sha256 of both exported models and the score threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from datamodules.augment import to_unit_range
from datamodules.cache import CacheError
from datamodules.frame_outputs import Batch, FrameOutputDataModule, OutputsOf
from metrics.cityscapes_labels import INSTANCE_ID_OFFSET, NUM_EVALUATED_CLASSES, label_ids_to_train_ids
from networks.detector import detect, load_exported_detector
from networks.segmenter import load_exported_segmenter
from representations.distance_map_encoding import CONTOUR_HEIGHT, CONTOUR_WIDTH, encode_frame

DISTANCE_CACHE_KIND = "distance_maps"
DISTANCE_CACHE_VERSION = 1
DISTANCE_SHARD_SIZE = 32
Source = Literal["annotations", "predictions"]


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


def planes_of(frame_objects: FrameObjectsFromModels | None, contour_height: float, contour_width: float) -> OutputsOf:
    """The outputs function of a distance-map cache: ``frame_classes`` uint8, ``frame_instances`` uint16 and
    ``frame_values`` float16, all (N, T, h, w), of a batch of whole-frame samples. Objects come from the batch's
    ``frame_labels``/``frame_instances`` when ``frame_objects`` is None, else from running it on the frames."""

    def outputs(batch: Batch) -> dict[str, np.ndarray]:
        if frame_objects is None:
            if "frame_labels" not in batch:
                raise CacheError("the sequence cache has no per-frame labels: the 'annotations' source needs them "
                                 "(demo data written with gtFine_sequence); use source 'predictions' on Cityscapes")
            classes = batch["frame_labels"].numpy().astype(np.uint8)
            instances = batch["frame_instances"].numpy().astype(np.uint16)
        else:
            frames = batch["frames"]
            flat_classes, flat_instances = frame_objects(frames.flatten(0, 1))
            classes = flat_classes.reshape(frames.shape[:2] + flat_classes.shape[1:])
            instances = flat_instances.reshape(frames.shape[:2] + flat_instances.shape[1:])
        return {"frame_classes": classes, "frame_instances": instances,
                "frame_values": encode_frames(classes, instances, contour_height, contour_width)}

    return outputs


def planes_to_batch(gathered: Mapping[str, np.ndarray]) -> Batch:
    """The planes as batch entries, ``frame_instances`` as int32."""
    return {name: torch.from_numpy(plane.astype(np.int32) if name == "frame_instances" else plane)
            for name, plane in gathered.items()}


class DistanceMapDataModule(FrameOutputDataModule):
    """:class:`CityscapesSequenceDataModule` batches plus the distance-map planes of their frames.

    The planes of every cached frame of train and val are computed once
    (:class:`datamodules.frame_outputs.FrameOutputDataModule`) into
    ``<cache_dir>/distance_maps_<split>_<h>x<w>_<source>_<contour>[_<score threshold>_<model shas>]_<sequences>``.
    Batches gain ``frame_classes`` uint8, ``frame_instances`` int32 and ``frame_values`` float16, all (B, T, h, w),
    of exactly the frames and crop windows of ``frames``.

    Prediction: ``predict_split`` batches carry the cached planes like validation batches; ``predict_frames``
    batches (unlabelled frames, so the ``"predictions"`` source only) get them on the model's device when they
    arrive there (:meth:`on_after_batch_transfer`), computed as the cache computes them.

    Args:
        source: ``"annotations"`` (every frame's labels; demo data) or ``"predictions"`` (segmenter + detector).
        segmenter_weights, detector_weights: exported models for the ``"predictions"`` source.
        instance_score_threshold: detections kept by the ``"predictions"`` source.
        contour_height, contour_width: the representation's contour profile (pixels at the cached resolution).
        extraction_batch_size: frames per forward pass of the ``"predictions"`` source.
        extraction_device: where the networks run during extraction (``"auto"``: CUDA when available, else CPU).
        **kwargs: the arguments of :class:`CityscapesSequenceDataModule` (``load_all_frame_labels`` is set by the
            source).
    """

    output_kind = DISTANCE_CACHE_KIND
    output_version = DISTANCE_CACHE_VERSION
    output_shard_size = DISTANCE_SHARD_SIZE
    outputs_to_batch = staticmethod(planes_to_batch)

    def __init__(self, root: str, source: Source = "annotations", segmenter_weights: str | None = None,
                 detector_weights: str | None = None, instance_score_threshold: float = 0.5,
                 contour_height: float = CONTOUR_HEIGHT, contour_width: float = CONTOUR_WIDTH,
                 extraction_device: str = "auto", extraction_batch_size: int = 4, **kwargs: Any) -> None:
        if source not in ("annotations", "predictions"):
            raise ValueError(f"source must be 'annotations' or 'predictions', got {source!r}")
        kwargs["load_all_frame_labels"] = source == "annotations"
        super().__init__(root, extraction_device=extraction_device, **kwargs)
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
        self.extraction_batch_size = extraction_batch_size
        self._predict_objects: FrameObjectsFromModels | None = None

    def model_shas(self) -> dict[str, str]:
        """sha256 of the exported models the ``"predictions"`` source reads (empty for annotations)."""
        if self.source == "annotations":
            return {}
        return {"segmenter_sha256": self.weights_sha256(self.segmenter_weights),
                "detector_sha256": self.weights_sha256(self.detector_weights)}

    def output_identity(self) -> dict[str, Any]:
        identity = {"source": self.source, "contour_height": self.contour_height,
                    "contour_width": self.contour_width, **self.model_shas()}
        if self.source == "predictions":
            identity["instance_score_threshold"] = self.instance_score_threshold
        return identity

    def output_name_parts(self) -> list[str]:
        parts = [self.source, f"contour{self.contour_height:g}x{self.contour_width:g}"]
        if self.source == "predictions":
            parts.append(f"score{self.instance_score_threshold:g}")
        return parts + [sha[:12] for sha in self.model_shas().values()]

    def output_extractor(self) -> OutputsOf:
        frame_objects = None
        if self.source == "predictions":
            frame_objects = FrameObjectsFromModels(self.segmenter_weights, self.detector_weights,
                                                   self.instance_score_threshold, self.device(),
                                                   self.extraction_batch_size)
        return planes_of(frame_objects, self.contour_height, self.contour_width)

    def setup(self, stage: str | None = None) -> None:
        """Refuse ``predict_frames`` with the annotations source (such frames have no labels), then set up as the
        parent."""
        if stage == "predict" and self.predict_frames is not None and self.source == "annotations":
            raise ValueError(f"predict_frames {self.predict_frames} holds unlabelled frames, but source 'annotations' "
                             "reads every frame's labels: use source 'predictions' with segmenter_weights and "
                             "detector_weights (the exported models find the frames' objects)")
        super().setup(stage)

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
        planes = planes_to_batch(planes_of(self._predict_objects, self.contour_height, self.contour_width)(batch))
        return batch | {name: plane.to(frames.device) for name, plane in planes.items()}

    def describe(self) -> dict[str, Any]:
        """The parent's summary plus where the objects come from."""
        return {**super().describe(), "source": self.source, "num_classes": NUM_EVALUATED_CLASSES,
                "contour": [self.contour_height, self.contour_width]}
