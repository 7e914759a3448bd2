"""The suite's Weights & Biases logger: runs grouped by paper, resumable, with best values and weights attached.

What it adds to Lightning's ``WandbLogger``:

* offline (and says how to ``wandb sync``) when no credentials are configured; ``WANDB_MODE`` in the environment
  wins (``disabled`` in tests);
* runs grouped by experiment family (one group per paper), named by variant, ``job_type`` the stage; the run id
  is kept in the run folder's ``run.json``, so ``--ckpt_path last`` continues the same W&B run;
* each ``val/`` or ``train/`` metric whose name says which way is better (AP, mIoU, PSNR, accuracy up; FID, loss
  down) gets ``define_metric`` with that summary, so the runs table shows best values, not the last ones;
* :meth:`log_weights` attaches checkpoints and exported networks as model artifacts with aliases (``latest``,
  ``best``), so a dashboard row leads to its weights (works offline too; ``wandb sync`` uploads them).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

METRIC_GOALS = (("*fid*", "min"), ("*loss*", "min"), ("*/ap", "max"), ("*/ap50", "max"), ("*miou*", "max"),
                ("*psnr*", "max"), ("*ssim*", "max"), ("*accuracy*", "max"), ("*sharpness*", "max"))
"""(glob on the metric name, summary) pairs; the first match decides, unmatched metrics keep W&B's default."""


def wandb_credentials_available() -> bool:
    """True when W&B can reach its server: an API key in the environment or a ``wandb login`` in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_disabled() -> bool:
    return os.environ.get("WANDB_MODE", "").lower() == "disabled"


def metric_goal(name: str) -> str | None:
    """``"min"`` or ``"max"`` for a metric name (see :data:`METRIC_GOALS`), ``None`` when its name does not say."""
    return next((goal for pattern, goal in METRIC_GOALS if fnmatch.fnmatch(name.lower(), pattern)), None)


class SuiteWandbLogger(WandbLogger):
    """``WandbLogger`` with the additions listed in the module docstring.

    Args:
        project, name, group, tags, save_dir, job_type, id: as for ``wandb.init`` (``id`` resumes that run).
        offline: ``None`` decides from the credentials and ``WANDB_MODE``.
        **kwargs: passed to ``WandbLogger``.
    """

    def __init__(self, project: str = "genforecast", name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, save_dir: str | None = None, job_type: str | None = None,
                 id: str | None = None, offline: bool | None = None, **kwargs: Any) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "").lower() not in ("online", "run") and not (
                wandb_credentials_available())
        save_dir = save_dir or "outputs"
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, name=name, group=group, tags=tags, save_dir=save_dir, job_type=job_type,
                         id=id, offline=offline, **kwargs)
        # Lightning passes anonymous=None, which wandb answers with a deprecation warning a user cannot act on.
        self._wandb_init.pop("anonymous", None)
        self._defined_metrics: set[str] = set()
        if offline and not wandb_disabled():
            rank_zero_info(
                f"W&B: no WANDB_API_KEY or wandb login found, logging offline under {save_dir}/wandb. "
                f"Upload later with: wandb sync {save_dir}/wandb/offline-run-*"
            )

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for name in metrics:
            if name not in self._defined_metrics:
                self._defined_metrics.add(name)
                goal = metric_goal(name)
                if goal is not None:
                    self.experiment.define_metric(name, summary=goal, step_metric="trainer/global_step")
        super().log_metrics(metrics, step)

    @rank_zero_only
    def log_weights(self, name: str, path: str | Path, aliases: list[str], metadata: dict[str, Any] | None = None,
                    ) -> None:
        """Attach a weights file to the run as a ``model`` artifact ``name`` with ``aliases``."""
        import wandb

        artifact = wandb.Artifact(name=name, type="model", metadata=metadata or {})
        artifact.add_file(str(path))
        self.experiment.log_artifact(artifact, aliases=aliases)
