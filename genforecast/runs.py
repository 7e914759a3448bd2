"""Run folders: the one place that knows where a run keeps what it writes.

Every ``genforecast`` run gets a folder of its own, so no run ever overwrites another's results::

    <output_dir>/                  experiment.output_dir, default outputs/<family>/<variant>
      <run id>/                    one fit (and its resumptions), or one validate/test/predict pass
        run.json                   what ran: stage, experiment, command, status, step, W&B id, best checkpoint
        config.yaml                the resolved config (config.resumed-<n>.yaml for each resumption of a fit)
        checkpoints/               last.ckpt (end of every fit, every N minutes, on SIGTERM), the best by the
                                   monitored metric, diverged-step=<N>.ckpt
        csv/metrics.csv            CSV logger;  wandb/  W&B run files (offline runs sync from here)
        images/  videos/           pictures logged during validation
        predictions/               what ``genforecast predict`` wrote
        detector.pt ...            weights a stage exports for the next one
      latest -> <run id>           the newest fit that saved a checkpoint: what ``--ckpt_path last|best`` and
                                   the next stage read

Run ids are ``YYYYmmdd-HHMMSS`` (``-2``, ``-3`` ... when taken; evaluation runs end in ``-validate``, ``-test``,
``-predict``). All ranks of one distributed run must agree on the folder without talking to each other before the
process group exists, so it comes from, in order: the folder a parent ``genforecast`` process handed to the ranks
it launched (Lightning's DDP launcher re-runs the command); ``GENFORECAST_RUN_ID`` (set it under launchers this
module does not know, such as ``torchrun``); SLURM's job and step ids (``slurm<job>-<step>`` under ``srun``: the
same in every task and again after a requeue, which is how a requeued job finds its run; ``slurm<job>`` in a batch
script without ``srun``); then a new timestamp claimed with an exclusive ``mkdir``. A later stage of a process whose
ranks already talk (a study under DDP) takes rank zero's choice (:mod:`genforecast.training_cli`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightning_modules.initial_weights import check_written_by
from storage.files import atomic_write

OUTPUTS = Path("outputs")
LATEST = "latest"
MANIFEST = "run.json"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
DIVERGED_PREFIX = "diverged-step="

_INHERITED_RUN = "GENFORECAST_PARENT_RUN"
"""``<pid>:<variant folder>::<run folder>`` handed by a launching process to the ranks it starts."""


class RunFolderError(Exception):
    """A run folder or checkpoint the user named cannot be used; the message says what to do instead."""


def variant_folder(family: str, variant: str, output_dir: str | Path | None = None) -> Path:
    """The folder holding every run of a variant: ``output_dir`` when given, else ``outputs/<family>/<variant>``."""
    return Path(output_dir) if output_dir else OUTPUTS / family / variant


def latest_run(variant_dir: Path) -> Path | None:
    """The newest fit run of a variant (what ``latest`` points to), or ``None`` before the first."""
    link = variant_dir / LATEST
    return link.resolve() if link.is_dir() else None


def latest_file(family: str, variant: str, name: str) -> Path:
    """``outputs/<family>/<variant>/latest/<name>``: a file the newest fit of a variant wrote (exports, checkpoints)."""
    return variant_folder(family, variant) / LATEST / name


def study_folder(family: str) -> Path:
    """Where a study of ``family`` keeps its result tables (``outputs/<family>/study/<run id>/``)."""
    return OUTPUTS / family / "study"


def point_latest(variant_dir: Path, run_dir: Path) -> None:
    """Make ``latest`` point at ``run_dir`` (atomically: a new link renamed over the old one)."""
    temporary = variant_dir / f".{LATEST}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(temporary, variant_dir / LATEST)


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _slurm_ids() -> tuple[str, str | None] | None:
    """``(job, step)`` of the SLURM job this process runs in (``step`` is ``None`` in the batch script itself)."""
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        return None
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job is not None and array_task is not None:
        job = f"{array_job}_{array_task}"
    step = os.environ.get("SLURM_STEP_ID")
    return job, step if step is not None and step.isdigit() else None


def _inherited_run(variant_dir: Path) -> Path | None:
    """The run folder of ``variant_dir`` that the process which launched this one handed down, if any."""
    pid, _, rest = os.environ.get(_INHERITED_RUN, "").partition(":")
    recorded_variant, _, folder = rest.partition("::")
    if pid.isdigit() and int(pid) == os.getppid() and folder and recorded_variant == str(variant_dir.resolve()):
        return Path(folder)
    return None


def hand_run_to_launched_ranks(run: RunFolder) -> None:
    """Let processes this one launches (Lightning's DDP ranks re-run the same command) use ``run``'s folder too."""
    os.environ[_INHERITED_RUN] = f"{os.getpid()}:{run.variant_dir.resolve()}::{run.path.resolve()}"


def is_requeued_slurm_job() -> bool:
    """True in a SLURM job that was requeued (preempted or past its time limit and started again)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


def is_global_zero() -> bool:
    """Whether this process is rank zero, read from the environment (usable before Lightning sets up)."""
    for variable in ("RANK", "SLURM_PROCID"):
        if os.environ.get(variable) is not None:
            return os.environ[variable] == "0"
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


@dataclass(frozen=True)
class RunFolder:
    """A resolved run folder: where the run writes, and whether it continues an earlier run there."""

    path: Path
    variant_dir: Path
    run_id: str
    continues: bool


def claim_run_folder(variant_dir: Path, stage: str) -> RunFolder:
    """The folder of a new run of ``stage`` (see the module docstring for how the id is chosen).

    ``latest`` is not moved here: a fit becomes its variant's ``latest`` when it saves its first checkpoint
    (:class:`genforecast.checkpointing.RunCheckpoint`), so a run that failed before saving anything never hides
    the runs before it from ``--ckpt_path last``. A fixed id (``GENFORECAST_RUN_ID``, or the SLURM job and step
    that every task of an ``srun`` shares) names the same folder on every rank; a requeued SLURM job finds its
    earlier folder that way and continues it (``continues=True``), as does a fixed ``GENFORECAST_RUN_ID`` whose
    folder holds checkpoints.
    """
    suffix = "" if stage == "fit" else f"-{stage}"
    inherited = _inherited_run(variant_dir)
    if inherited is not None:
        return RunFolder(inherited, variant_dir, inherited.name, continues=False)
    slurm = _slurm_ids()
    fixed = os.environ.get("GENFORECAST_RUN_ID")
    if fixed is None and slurm is not None and slurm[1] is not None:
        fixed = f"slurm{slurm[0]}-{slurm[1]}"
    if fixed is not None:
        path = variant_dir / f"{fixed}{suffix}"
        continues = stage == "fit" and (path / CHECKPOINTS).is_dir() and (
            is_requeued_slurm_job() or "GENFORECAST_RUN_ID" in os.environ)
        if is_global_zero():
            path.mkdir(parents=True, exist_ok=True)
        return RunFolder(path, variant_dir, path.name, continues=continues)
    variant_dir.mkdir(parents=True, exist_ok=True)
    base = f"slurm{slurm[0]}{suffix}" if slurm is not None else f"{_timestamp()}{suffix}"
    if slurm is not None and stage == "fit" and is_requeued_slurm_job():
        earlier = sorted((folder for pattern in (base, f"{base}-*") for folder in variant_dir.glob(pattern)
                          if (folder / CHECKPOINTS).is_dir()), key=lambda folder: (folder / CHECKPOINTS).stat().st_mtime)
        if earlier:
            path = earlier[-1]
            return RunFolder(path, variant_dir, path.name, continues=True)
    for attempt in range(1, 1000):
        path = variant_dir / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return RunFolder(path, variant_dir, path.name, continues=False)
    raise RunFolderError(f"could not claim a new run folder under {variant_dir}")


def run_folder_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/<file>`` with ``<run>/run.json``), if any."""
    run_dir = checkpoint.resolve().parent.parent
    return run_dir if checkpoint.resolve().parent.name == CHECKPOINTS and (run_dir / MANIFEST).is_file() else None


# ---- the manifest -----------------------------------------------------------------------------------------


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run folder (empty when absent or unreadable: a manifest never blocks a run)."""
    try:
        return json.loads((run_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def update_manifest(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``run.json`` (written atomically); rank zero only."""
    manifest = read_manifest(run_dir) | fields | {"updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write(run_dir / MANIFEST, lambda handle: handle.write(json.dumps(manifest, indent=1).encode()))
    return manifest


def start_manifest(run: RunFolder, stage: str, experiment: dict[str, Any], checkpoint: Path | None) -> None:
    """Record the start (or resumption) of a run in its ``run.json``."""
    manifest = read_manifest(run.path)
    resumptions = list(manifest.get("resumed_from", []))
    if run.continues or (checkpoint is not None and manifest):
        resumptions.append(str(checkpoint))
    update_manifest(run.path, run_id=run.run_id, stage=manifest.get("stage", stage), status="running",
                    family=experiment["family"], variant=experiment["variant"], command=sys.argv,
                    host=socket.gethostname(), started=manifest.get("started", time.strftime("%Y-%m-%dT%H:%M:%S")),
                    checkpoint=str(checkpoint) if checkpoint else None, resumed_from=resumptions)


def release_unused(run: RunFolder) -> None:
    """Remove a new run's folder when nothing was written into it (its config failed to build)."""
    if not run.continues and run.path.is_dir() and not any(run.path.iterdir()):
        run.path.rmdir()


# ---- checkpoints ------------------------------------------------------------------------------------------


def checkpoint_step(path: Path) -> int | None:
    """The global step stored in a checkpoint, or ``None`` when the file cannot be read (damaged, truncated).

    The file is memory-mapped: only its pickled metadata is read, so checking a large checkpoint is cheap.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any failure to read means "not loadable"; the caller names the file
        return None
    return int(checkpoint.get("global_step", 0)) if isinstance(checkpoint, dict) else None


def newest_loadable_checkpoint(run_dir: Path, exclude: Path | None = None) -> tuple[Path, int] | None:
    """The loadable checkpoint of a run with the highest global step (diverged ones last), or ``None``."""
    candidates = []
    for path in sorted((run_dir / CHECKPOINTS).glob("*.ckpt")):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        step = checkpoint_step(path)
        if step is not None:
            candidates.append((not path.name.startswith(DIVERGED_PREFIX), step, path.stat().st_mtime, path))
    if not candidates:
        return None
    _, step, _, path = max(candidates)
    return path, step


def check_loadable(path: Path) -> None:
    """Raise :class:`RunFolderError` naming ``path`` (and the newest loadable alternative) if it cannot be loaded."""
    if not path.is_file():
        raise RunFolderError(f"checkpoint {path} does not exist")
    if checkpoint_step(path) is not None:
        return
    run_dir = run_folder_of_checkpoint(path)
    alternative = newest_loadable_checkpoint(run_dir, exclude=path) if run_dir is not None else None
    offer = (f"; the newest loadable checkpoint of that run is {alternative[0]} (step {alternative[1]}): "
             f"pass --ckpt_path {alternative[0]}" if alternative else "; no other checkpoint of that run loads")
    raise RunFolderError(f"checkpoint {path} is damaged (torch cannot read it){offer}")


def resolve_checkpoint(spec: str, variant_dir: Path, stage: str) -> Path | None:
    """The checkpoint file ``--ckpt_path`` names: a path, or ``last`` / ``best`` of the variant's newest fit.

    ``last`` when nothing was trained yet returns ``None`` for a fit (it starts from scratch, so one command
    both starts and resumes a job) and raises for the other stages, which need weights.
    """
    if spec not in ("last", "best"):
        path = Path(spec)
        check_loadable(path)
        return path
    run_dir = latest_run(variant_dir)
    if spec == "last":
        last = run_dir / CHECKPOINTS / LAST_CHECKPOINT if run_dir is not None else None
        if last is None or not last.exists():
            if stage == "fit":
                return None
            raise RunFolderError(f"no trained run of this variant under {variant_dir} (no latest/{CHECKPOINTS}/"
                                 f"{LAST_CHECKPOINT}): train it first with `genforecast fit` and the same configs")
        check_loadable(last)
        return last
    if run_dir is None:
        raise RunFolderError(f"no trained run of this variant under {variant_dir}: train it first with "
                             "`genforecast fit` and the same configs")
    best = read_manifest(run_dir).get("best_checkpoint")
    if not best:
        raise RunFolderError(f"run {run_dir} has no best checkpoint (it monitors no metric, or never validated); "
                             "use --ckpt_path last")
    path = Path(best)
    check_loadable(path)
    return path


def check_checkpoint_model(path: Path, model: torch.nn.Module) -> None:
    """Raise :class:`lightning_modules.initial_weights.ForeignCheckpointError` when ``path`` was written by another
    model class than ``model``'s."""
    check_written_by(torch.load(path, map_location="cpu", weights_only=True, mmap=True), path, type(model))
