"""Hyperparameters accepted under the names earlier versions gave them, so that old checkpoints and configs still load.

Lightning rebuilds a module from the hyperparameters stored in its checkpoint (``load_from_checkpoint`` calls
``__init__`` with them) and LightningCLI from config files, so a renamed argument stays a keyword under its old name,
default ``None`` and left out of the saved hyperparameters (``save_hyperparameters(ignore=[old])``): a value given
under it becomes the new name's (:func:`adopt_renamed`).
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L


def adopt_renamed(module: L.LightningModule, old: str, new: str, value: Any) -> None:
    """Store ``value``, given under the ``old`` name (None: not given), as hyperparameter ``new``, with a warning."""
    if value is None:
        return
    warnings.warn(f"{type(module).__name__}: the hyperparameter {old!r} is now called {new!r}; reading {old}={value!r} "
                  f"as {new}", FutureWarning, stacklevel=3)
    module.hparams[new] = value
