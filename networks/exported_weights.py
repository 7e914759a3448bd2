"""Weight files: the self-describing ones a stage of a pipeline exports and a later stage loads by path, and the
plain state dicts of torchvision models (ImageNet, COCO) read from local files.

The auxiliary networks (shape/texture classifier, semantic segmenter, Mask R-CNN detector) are trained by their
own LightningModules and consumed, frozen, by the paper models. Each export is a ``torch.save`` dict with a
``format`` marker, metadata describing the network, and its ``state_dict``, written atomically; reading checks
the marker and names the file and the command that produces it when anything is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from storage.files import atomic_write


def export_weights(path: str | Path, format_marker: str, network: nn.Module, **metadata: Any) -> Path:
    """Write ``network``'s weights (on the CPU) with ``format_marker`` and ``metadata``, atomically."""
    payload = {"format": format_marker, **metadata,
               "state_dict": {name: tensor.detach().cpu() for name, tensor in network.state_dict().items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def read_exported_weights(path: str | Path, format_marker: str, what: str, produced_by: str) -> dict[str, Any]:
    """The contents of a file written by :func:`export_weights` with ``format_marker``.

    The file is memory-mapped, so reading the metadata of a large export is cheap. ``what`` names the network in
    error messages and ``produced_by`` says how to produce the file when it is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights {path} not found: {produced_by}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, ValueError, EOFError, OSError) as error:
        raise ValueError(f"{path} is not a readable genforecast {what} file: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != format_marker:
        raise ValueError(f"{path} is not a genforecast {what} file (format {format_marker})")
    return payload


def read_state_dict(path: str | Path, what: str) -> Mapping[str, torch.Tensor]:
    """The state dict of tensors in a local ``torch.save`` file (torchvision's published weights), read without
    unpickling code. ``FileNotFoundError`` or ``ValueError`` names the file; ``what`` names the weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    return state
