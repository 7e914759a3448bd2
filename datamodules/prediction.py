"""Prediction data shared by the DataModules: sample names, predict loaders, and windows of a folder of frames.

``genforecast predict`` runs a model over its DataModule's ``predict_dataloader()``: a data split, or, for the video
and sequence models, a folder of real frames (``predict_frames``). Predict batches are shaped like the validation
batches the models consume, without what a folder of frames cannot have (ground truth), plus names for the
prediction writer (:class:`genforecast.prediction.PredictionWriter`):

* ``"name"``: list[str] (B), unique in the predict set: the generated sample, the clip, or the last frame of a
  sequence window (the frame a forecaster's final step predicts);
* ``"frame_names"``: list[list[str]] (B, T), for frame windows: the name of each frame of ``frames``.

A frame's name is ``<city>_<seq:06d>_<frame:06d>`` for Cityscapes-named files (what the Cityscapes evaluators match
predictions by), else its path relative to the folder without the extension, ``/`` replaced by ``_``
(:func:`frame_stem`).

Predict loaders are :func:`datamodules.sampling.evaluation_loader`: every sample once, in order, each rank its own
share.

Frame folder layout:

"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

FRAME_FOLDER_LAYOUT = """\
<predict_frames>/              searched at any depth; hidden files and folders are skipped
  .../<city>_<seq:06d>_<frame:06d>_leftImg8bit.png
                               Cityscapes-named frames (e.g. a leftImg8bit_sequence/<split> folder): one sequence per
                               city and sequence number, ordered by frame number
  .../<any name>.png|.jpg|.jpeg
                               other frames: one sequence per folder, consecutive frames in file-name order
  Every run of frames spaced as the model's inputs and targets (every frame_step-th frame) is one sample, named
  after its last frame.
"""
__doc__ = (__doc__ or "") + FRAME_FOLDER_LAYOUT

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CITYSCAPES_FRAME = re.compile(r"^(?P<stem>.+_\d{6}_\d{6})_leftImg8bit\.png$")


def frame_stem(relative_path: str) -> str:
    """The name of a frame file given by its path relative to its folder (see the module docstring)."""
    match = _CITYSCAPES_FRAME.match(Path(relative_path).name)
    if match is not None:
        return match["stem"]
    return Path(relative_path).with_suffix("").as_posix().replace("/", "_")


def sample_names(batch: dict[str, Any]) -> list[str]:
    """The names of a batch's samples: its ``"name"`` (predict batches), else its zero-padded dataset ``"index"``."""
    if "name" in batch:
        return list(batch["name"])
    if "index" not in batch:
        raise KeyError("a predict batch names its samples by 'name' or 'index': predict with the DataModule's "
                       "predict_dataloader()")
    return [f"{int(index):06d}" for index in batch["index"]]


def target_names(batch: dict[str, Any], steps: int) -> list[list[str]]:
    """Per sample, the names of its last ``steps`` frames (a forecaster's targets, one per future step).

    From ``"frame_names"`` when the batch has them, else every step takes the sample's name (the prediction writer
    keeps the steps in separate folders).
    """
    if "frame_names" in batch:
        return [list(names[-steps:]) for names in batch["frame_names"]]
    return [[name] * steps for name in sample_names(batch)]


class NamedBatches(Dataset):
    """A batch-indexed dataset whose batches also carry their samples' ``"name"`` and, when given, ``"frame_names"``.

    ``names[i]`` names sample ``i``; ``frame_names[i]`` names each of its frames.
    """

    def __init__(self, dataset: Dataset, names: Sequence[str], frame_names: Sequence[Sequence[str]] | None = None):
        if len(names) != len(dataset) or (frame_names is not None and len(frame_names) != len(dataset)):
            raise ValueError(f"{len(names)} names for a dataset of {len(dataset)} samples")
        self.dataset, self.names, self.frame_names = dataset, names, frame_names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: torch.Tensor) -> dict[str, Any]:
        batch = self.dataset[indices]
        positions = torch.as_tensor(indices, dtype=torch.long).reshape(-1).tolist()
        batch["name"] = [self.names[position] for position in positions]
        if self.frame_names is not None:
            batch["frame_names"] = [list(self.frame_names[position]) for position in positions]
        return batch


@dataclass(frozen=True)
class FrameWindow:
    """The frame files of one sample of a frame folder, oldest first, and their names (:func:`frame_stem`)."""

    paths: tuple[Path, ...]
    names: tuple[str, ...]


def frame_windows(folder: str | Path, offsets: Sequence[int]) -> list[FrameWindow]:
    """Every window of a frame folder (layout: :data:`FRAME_FOLDER_LAYOUT`) holding the frames at ``offsets``.

    ``offsets`` (increasing, from 0) are frame numbers relative to a window's first frame, e.g. ``(0, 3, ..., 18)``
    for 4 inputs and 3 targets every 3rd frame. Windows are ordered by sequence (in path order), then by first
    frame. A missing folder, or one without any complete window, raises ``FileNotFoundError`` naming the folder
    and the expected layout.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"predict_frames folder {folder} does not exist; expected layout:\n"
                                f"{FRAME_FOLDER_LAYOUT}")
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in path.relative_to(folder).parts))
    sequences: dict[tuple[str, ...], dict[int, Path]] = {}
    for path in files:
        name = frame_stem(path.relative_to(folder).as_posix())
        if _CITYSCAPES_FRAME.match(path.name):
            city_sequence, number = name.rsplit("_", 1)
            sequences.setdefault(("cityscapes", city_sequence), {})[int(number)] = path
        else:
            frames = sequences.setdefault(("folder", str(path.parent)), {})
            frames[len(frames)] = path
    windows = []
    for frames in sequences.values():
        for first in sorted(frames):
            if all(first + offset in frames for offset in offsets):
                paths = tuple(frames[first + offset] for offset in offsets)
                windows.append(FrameWindow(paths, tuple(frame_stem(path.relative_to(folder).as_posix())
                                                        for path in paths)))
    if not windows:
        raise FileNotFoundError(f"no sample in the predict_frames folder {folder}: {len(files)} frames, none starting "
                                f"a run of frames at offsets {list(offsets)}; expected layout:\n"
                                f"{FRAME_FOLDER_LAYOUT}")
    return windows


class FrameWindows(Dataset):
    """Frame windows decoded on demand, a whole index batch at a time as :class:`ResumableDataLoader` expects.

    ``dataset[indices]`` returns ``{"frames": uint8 (B, T, 3, h, w), "index": int64 (B,)}``; ``load(path)`` decodes
    one frame to uint8 (3, h, w) at the model's resolution (a module-level function or ``functools.partial`` of
    one, so that the dataset pickles into loader workers).
    """

    def __init__(self, windows: Sequence[FrameWindow], load: Callable[[Path], np.ndarray]) -> None:
        self.windows = list(windows)
        self.load = load

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        frames = [np.stack([self.load(path) for path in self.windows[index].paths]) for index in indices.tolist()]
        return {"frames": torch.from_numpy(np.stack(frames)), "index": indices.clone()}
