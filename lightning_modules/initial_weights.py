"""Starting a module from a checkpoint of the same module (a previous stage of a schedule: AR fine-tuning from the
AR model, F2F's P4 from P5). One loader, so every model checks the same things: the file exists, and it was written
by the model class that loads it. A checkpoint records its writer under ``checkpoint["genforecast"]["model"]``
(:class:`genforecast.checkpointing.RunCheckpoint`); one written through LightningCLI before that has
``_class_path`` among its hyperparameters; one that says neither is trusted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class ForeignCheckpointError(ValueError):
    """A checkpoint written by another model than the one loading it; the message names both."""


def checkpoint_model(checkpoint: dict[str, Any]) -> str | None:
    """The ``module.Class`` of the LightningModule that wrote a checkpoint, when it says."""
    recorded = checkpoint.get("genforecast", {}).get("model")
    if recorded:
        return recorded
    class_path = checkpoint.get("hyper_parameters", {}).get("_class_path")
    return class_path if isinstance(class_path, str) else None


def check_written_by(checkpoint: dict[str, Any], path: str | Path, model_class: type) -> None:
    """Raise :class:`ForeignCheckpointError` when ``checkpoint`` (read from ``path``) says another class wrote it."""
    written_by = checkpoint_model(checkpoint)
    if written_by is None or written_by.rsplit(".", 1)[-1] == model_class.__qualname__:
        return
    record = checkpoint.get("genforecast", {})
    where = f" ({record['family']}/{record['variant']})" if "family" in record else ""
    raise ForeignCheckpointError(
        f"checkpoint {path} was written by {written_by.rsplit('.', 1)[-1]}{where}, not by "
        f"{model_class.__qualname__}: pass a checkpoint of a {model_class.__qualname__} run")


def initial_state(path: str | Path, model_class: type) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of the Lightning checkpoint at ``path``, after checking that ``model_class`` wrote it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init_weights {path} does not exist: name the checkpoint of the previous stage "
                                f"(a {model_class.__qualname__} run's checkpoints/last.ckpt)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    check_written_by(checkpoint, path, model_class)
    return checkpoint["state_dict"]
