"""Checkpoints that hold: the end of every fit, every N minutes, on SIGTERM and SLURM's warning signal.

:class:`RunCheckpoint` is Lightning's ``ModelCheckpoint`` (the best checkpoints by the monitored metric, as
configured under ``checkpoint:``) plus the guarantees a cluster needs:

* ``last.ckpt`` is the state at the end of every fit, also when the length is not a multiple of a save interval;
* ``last.ckpt`` is rewritten every ``save_every_minutes`` of training, independently of validation;
* SIGTERM (preemption, ``scancel``, a time limit) and SIGUSR1 (``#SBATCH --signal=SIGUSR1@90``) save
  ``last.ckpt`` at the next step boundary and stop the fit with :class:`RunInterrupted`; under SLURM, SIGUSR1
  also requeues the job (``scontrol requeue``), whose next start resumes from that checkpoint;
* a checkpoint written when a fit stops mid-epoch (``max_steps``) says so, so that extending the run with a larger
  ``max_steps`` continues that epoch with the very next batch (Lightning records the epoch as finished);
* every checkpoint records which model, family, variant and run wrote it (``checkpoint["genforecast"]``);
* a monitored metric that the model does not log (FashionCAN without a classifier has no FID) is warned about
  once and only ``last.ckpt`` is kept, instead of a crash at the first validation;
* the best checkpoint is checked after every validation, not only on the save triggers, and its path is recorded
  in the run's ``run.json`` (what ``--ckpt_path best`` reads).

Why signals are handled here and not by Lightning: Lightning's SLURM auto-requeue saves from inside the signal
handler, which can run in the middle of a step (between the discriminator's and the generator's update), so the
checkpoint would not resume exactly; and its SIGTERM handling lets ranks stop at different steps. Here the
handler only records the signal; the ranks agree on it at a step boundary (one all-reduce every
``check_every_n_batches`` batches under DDP, none on one device) and all save the same state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from genforecast.runs import RunFolder, point_latest, update_manifest

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class RunInterrupted(Exception):
    """A fit stopped by a signal after saving a resumable checkpoint; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, checkpoint: str, step: int, requeued: bool) -> None:
        name = signal.Signals(signum).name
        then = ("the requeued job resumes from it" if requeued
                else "resume with the same command and --ckpt_path last")
        super().__init__(f"stopped by {name} at global step {step}; saved {checkpoint}: {then}")
        self.exit_code = 128 + signum
        self.run_status = "requeued" if requeued else "interrupted"


class _ReceivedSignal:
    """Records the first stop signal; the handler does nothing else (it may run in the middle of a step)."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        self.signum = 0
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._record)

    def _record(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def _requeue_slurm_job() -> bool:
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        return False
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        rank_zero_warn(f"scontrol requeue {job} failed: {result.stderr.strip()}")
    return result.returncode == 0


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with the guarantees listed in the module docstring.

    Args:
        save_every_minutes: rewrite ``last.ckpt`` after this much training time; ``None`` disables it.
        check_every_n_batches: under DDP, how often the ranks agree on signals and the time-based save (one
            all-reduce of two numbers); on one device both are checked after every batch.
        *args, **kwargs: ``ModelCheckpoint``'s.
    """

    def __init__(self, *args: Any, save_every_minutes: float | None = 30.0, check_every_n_batches: int = 10,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if check_every_n_batches < 1:
            raise ValueError(f"check_every_n_batches must be at least 1, got {check_every_n_batches}")
        self.save_every_minutes = save_every_minutes
        self.check_every_n_batches = check_every_n_batches
        self.provenance: dict[str, str] = {}
        self.run: RunFolder | None = None
        self._pointed_latest = False
        self._signal = _ReceivedSignal()
        self._batches = 0
        self._last_save_time = time.monotonic()
        self._last_saved_step = -1
        self._recorded_best = ""
        self._warned_missing_monitor = False

    # ---- the run's lifecycle ------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._batches = 0
        self._last_save_time = time.monotonic()
        self._last_saved_step = trainer.global_step  # resumed from this step: nothing new to save yet
        self._signal.install()  # after Lightning registered its handlers (Trainer._run), so ours replace them

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._batches += 1
        if trainer.fast_dev_run:
            return
        distributed = trainer.world_size > 1
        if distributed and self._batches % self.check_every_n_batches:
            return
        due = (self.save_every_minutes is not None
               and time.monotonic() - self._last_save_time >= 60 * self.save_every_minutes)
        signum, due = self._signal.signum, due
        if distributed:
            flags = torch.tensor([signum, int(due)], device=pl_module.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            signum, due = int(flags[0]), bool(flags[1])
        if signum:
            self._stop(trainer, signum)
        if due:
            self.save_last_now(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._signal.restore()
        if self._last_saved_step != trainer.global_step and not trainer.fast_dev_run:
            self.save_last_now(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._signal.restore()

    def save_last_now(self, trainer: L.Trainer) -> str:
        """Write ``last.ckpt`` with the current state (every rank must call it: saving ends in a barrier)."""
        path = self.format_checkpoint_name(self._monitor_candidates(trainer), self.CHECKPOINT_NAME_LAST)
        self.last_model_path = path
        trainer.save_checkpoint(path, self.save_weights_only)
        self._last_saved_step = trainer.global_step
        self._last_save_time = time.monotonic()
        self._point_latest(trainer)
        return path

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._point_latest(trainer)

    def _point_latest(self, trainer: L.Trainer) -> None:
        """The first checkpoint of a run makes it its variant's ``latest`` (see :mod:`genforecast.runs`)."""
        if not self._pointed_latest and self.run is not None and trainer.is_global_zero:
            point_latest(self.run.variant_dir, self.run.path)
        self._pointed_latest = True

    def _stop(self, trainer: L.Trainer, signum: int) -> None:
        path = self.save_last_now(trainer)
        requeued = False
        if trainer.is_global_zero:
            requeued = signum == signal.SIGUSR1 and _requeue_slurm_job()
            if self.run is not None:
                update_manifest(self.run.path, status="requeued" if requeued else "interrupted",
                                global_step=trainer.global_step)
        rank_zero_info(f"{signal.Signals(signum).name}: saved {path} at global step {trainer.global_step}")
        raise RunInterrupted(signum, path, trainer.global_step, requeued)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._pointed_latest = False

    # ---- what a checkpoint records ------------------------------------------------------------------------

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        model = type(pl_module)
        checkpoint["genforecast"] = {"model": f"{model.__module__}.{model.__qualname__}", **self.provenance}
        fit_loop = checkpoint.get("loops", {}).get("fit_loop")
        if fit_loop is not None:
            _reopen_unfinished_epoch(trainer, fit_loop)

    # ---- best checkpoints ---------------------------------------------------------------------------------

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        if self.monitor is not None and self.monitor not in monitor_candidates and self.save_top_k != 0:
            if not self._warned_missing_monitor and trainer.fit_loop.epoch_loop.val_loop._has_run:
                self._warned_missing_monitor = True
                rank_zero_warn(f"the monitored metric {self.monitor!r} is not logged by this model (logged: "
                               f"{sorted(k for k in monitor_candidates if '/' in k)}); keeping last.ckpt only. "
                               f"Set --checkpoint.monitor to one of those to keep the best checkpoint too.")
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        # Lightning checks the best only on its save triggers (every_n_train_steps, every_n_epochs); here every
        # validation counts, so the best checkpoint is the best validated state whatever the save interval.
        if (self.monitor is not None and self.save_top_k != 0 and trainer.state.fn == "fit"
                and not trainer.sanity_checking and not trainer.fast_dev_run):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        if self.best_model_path and self.best_model_path != self._recorded_best and trainer.is_global_zero:
            self._recorded_best = self.best_model_path
            if self.run is not None:
                score = self.best_model_score.item() if self.best_model_score is not None else None
                update_manifest(self.run.path, best_checkpoint=self.best_model_path, best_score=score,
                                monitor=self.monitor, mode=self.mode)


def _reopen_unfinished_epoch(trainer: L.Trainer, fit_loop: dict[str, Any]) -> None:
    """Mark the epoch of a checkpoint as unfinished when the fit stopped before its last batch.

    Lightning counts an epoch as processed as soon as its loop ends, also when ``max_steps`` ended it early; a
    checkpoint saved then would resume at the next epoch and skip the rest of this one. Batches come from
    stateful loaders (``datamodules.sampling``) that remember their position, so reopening the epoch is all it
    takes to continue with the very next batch.
    """
    batch_progress = trainer.fit_loop.epoch_loop.batch_progress
    if batch_progress.is_last_batch or batch_progress.current.completed >= trainer.num_training_batches:
        return
    for counter in fit_loop["epoch_progress"].values():
        for field in ("processed", "completed"):
            counter[field] = min(counter[field], counter["started"] - 1)


class ResumedOptimizerSettings(L.Callback):
    """When a fit resumes, optimiser settings given now win over those stored with the optimiser state.

    Lightning restores each optimiser's state, hyperparameters included, after the optimisers were built from the
    current config, so ``--model.init_args.lr 2e-4 --ckpt_path <diverged checkpoint>`` would silently train at
    the checkpoint's rate again. Here every setting whose configured value differs from the checkpoint's is put
    back after the restore, and the log says so. For the learning rate the comparison is on the schedule's base
    (``initial_lr``) and the restored rate is rescaled by new base / old base, which continues a multiplicative
    schedule (LambdaLR, step, polynomial, cosine to zero) at the new base; the schedulers' ``base_lrs`` follow.

    A schedule planned over the run's length (``OneCycleLR.total_steps``, ``CosineAnnealingLR.T_max``,
    ``LinearLR``/``PolynomialLR.total_iters``) is re-planned over the current length when a finished run is extended
    with a larger ``max_steps``: the restored scheduler would otherwise refuse to step past its old end. (LambdaLR
    schedules read the length when ``configure_optimizers`` builds them, so they follow by themselves.)
    """

    PLANNED_LENGTH = ("total_steps", "T_max", "total_iters")

    def __init__(self) -> None:
        self._saved_groups: list[list[dict[str, Any]]] = []
        self._configured_groups: list[list[dict[str, Any]]] = []
        self._configured_lengths: list[dict[str, Any]] = []

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._saved_groups = [[_settings(group) for group in state["param_groups"]]
                              for state in checkpoint.get("optimizer_states", [])]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The optimisers exist (built from the current config) and their state is not restored yet.
        self._configured_groups = [[_settings(group) for group in optimizer.param_groups]
                                   for optimizer in trainer.optimizers]
        self._configured_lengths = [{name: getattr(config.scheduler, name) for name in self.PLANNED_LENGTH
                                     if hasattr(config.scheduler, name)} for config in trainer.lr_scheduler_configs]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for config, lengths in zip(trainer.lr_scheduler_configs, self._configured_lengths):
            for name, planned in lengths.items():
                if getattr(config.scheduler, name) != planned:
                    rank_zero_info(f"the learning-rate schedule ({type(config.scheduler).__name__}.{name}) is "
                                   f"re-planned over {planned} steps (the checkpoint planned "
                                   f"{getattr(config.scheduler, name)})")
                    setattr(config.scheduler, name, planned)
        saved, self._saved_groups = self._saved_groups, []
        schedulers = {id(config.scheduler.optimizer): config.scheduler for config in trainer.lr_scheduler_configs}
        for index, (optimizer, configured_groups, saved_groups) in enumerate(
                zip(trainer.optimizers, self._configured_groups, saved)):
            for group_index, (group, configured, stored) in enumerate(
                    zip(optimizer.param_groups, configured_groups, saved_groups)):
                changes = _apply_configured(group, configured, stored)
                scheduler = schedulers.get(id(optimizer))
                if "lr" in changes and scheduler is not None:
                    scheduler.base_lrs[group_index] = group["initial_lr"]
                for name, (old, new) in changes.items():
                    rank_zero_info(f"resuming with {name}={new} for optimizer {index} group {group_index} from the "
                                   f"current config instead of the checkpoint's {old}")


def _settings(group: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in group.items() if key != "params"}


def _base_lr(group: dict[str, Any]) -> Any:
    return group.get("initial_lr", group.get("lr"))


def _apply_configured(group: dict[str, Any], configured: dict[str, Any],
                      stored: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Put the configured settings that differ from the stored ones into the restored ``group``; return them."""
    changes: dict[str, tuple[Any, Any]] = {}
    old_base, new_base = _base_lr(stored), _base_lr(configured)
    if old_base is not None and new_base is not None and old_base != new_base:
        group["lr"] = group["lr"] * new_base / old_base if old_base else new_base
        if "initial_lr" in group or "initial_lr" in configured:
            group["initial_lr"] = new_base
        changes["lr"] = (old_base, new_base)
    for key, value in configured.items():
        if key in ("lr", "initial_lr") or key not in stored or key not in group:
            continue
        if _differs(stored[key], value):
            group[key] = value
            changes[key] = (stored[key], value)
    return changes


def _differs(first: Any, second: Any) -> bool:
    if isinstance(first, torch.Tensor) or isinstance(second, torch.Tensor):
        return not torch.equal(torch.as_tensor(first), torch.as_tensor(second))
    return tuple(first) != tuple(second) if isinstance(first, (list, tuple)) else first != second
