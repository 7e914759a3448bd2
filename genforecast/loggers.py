"""The suite's Weights & Biases logger: named, grouped and tagged runs, offline when no key is configured."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info


def wandb_credentials_available() -> bool:
    """True when W&B can reach its server: an API key in the environment or a ``wandb login`` in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class SuiteWandbLogger(WandbLogger):
    """``WandbLogger`` that runs offline (and says how to sync) when no credentials are configured.

    Runs are grouped by experiment family (one group per paper) and named by variant, so one W&B dashboard
    compares the variants of a paper side by side; ``job_type`` separates training from evaluation runs. An
    explicit ``WANDB_MODE`` in the environment (``disabled`` in tests, ``online``/``offline`` by choice) wins.
    """

    def __init__(self, project: str = "genforecast", name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, save_dir: str | None = None, job_type: str | None = None,
                 offline: bool | None = None, **kwargs: Any) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "").lower() not in ("online", "run") and not (
                wandb_credentials_available())
        save_dir = save_dir or "outputs"
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, name=name, group=group, tags=tags, save_dir=save_dir, job_type=job_type,
                         offline=offline, **kwargs)
        if offline and os.environ.get("WANDB_MODE", "").lower() != "disabled":
            rank_zero_info(
                f"W&B: no WANDB_API_KEY or wandb login found, logging offline under {save_dir}/wandb. "
                f"Upload later with: wandb sync {save_dir}/wandb/offline-run-*"
            )
