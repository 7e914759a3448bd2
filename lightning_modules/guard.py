"""Divergence guard: what a training step does when one of its losses is not finite.

Contract, for every optimiser update of every module: when the update's loss is not finite on any rank, every rank
takes the same branch, before the update's optimiser step:

- ``stop``: the weights are still the last good ones; they are saved to ``diverged-step=N.ckpt`` next to the periodic
  checkpoints (never overwriting one) and :class:`DivergenceError` is raised, naming the global step, epoch, batch
  and losses, with the hint to resume from that checkpoint at a lower learning rate.
- ``skip``: the update's optimiser step is not taken (the caller counts it in ``skipped_steps``, logged as
  ``train/skipped_steps``); a warning names the step.

The adversarial modules check the loss they back-propagate (every logged term enters it, so a non-finite term makes
it non-finite: sums and products, zero weights included, propagate infinities and NaNs); :func:`losses_are_finite`
checks every loss it is given.

How the decision reaches the host, cheaply. The finiteness check runs on the device (``isfinite`` of the loss),
its flag is summed over ranks there (an all-reduce of one number, no host involvement under NCCL),
and the flag is copied to pinned host memory asynchronously with an event recorded after it. The caller takes the
verdict in two parts: :meth:`DivergenceGuard.check` right after the losses, :meth:`Verdict.finite` right before
the optimiser step, i.e. after the backward pass has been queued. Waiting for the verdict then waits for the
forward pass only, while the GPU still has the whole backward pass to run: the host learns the decision without
the device running dry, so the decision stays exact (taken for this very update, before its step) at no cost in
throughput. On a single CPU device, where nothing runs ahead of the host, the verdict reads the loss itself (one
``item()``, the cheapest check). The whole-step CUDA graph, where the host cannot take part in the step, uses
:class:`DeviceGuard` instead. What was considered and not done, and why:

- Reading the flag every N steps (with the update zeroed on the device meanwhile) would make ``skip`` inexact for
  stateful optimisers (a zero gradient still moves SGD with momentum and Adam) unless the skip happens inside the
  optimiser (fused optimisers' ``found_inf``, which the whole-step CUDA graph of
  :mod:`lightning_modules.adversarial` uses), and would make ``stop`` save a checkpoint whose loop counters,
  random-generator step and batch-norm statistics are those of a later step: resuming from it would not repeat the
  diverged step. The overlapped read keeps both exact.
- The non-finite update's backward pass now runs (it is queued before the verdict is known); its non-finite
  gradients are dropped with the skipped step. Under DDP every rank runs it, so the gradient all-reduce still
  matches on all ranks.

Modules with automatic optimisation (the forecasters) call :func:`losses_are_finite`, which takes both parts at
once from ``training_step`` (Lightning queues the backward pass only after ``training_step`` returns). On a GPU
that is one wait for the forward pass per step; at the forecasters' step sizes (tens to hundreds of ms) the device
idles for the microseconds it takes Lightning to launch the first backward kernel.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import lightning as L
import torch

log = logging.getLogger(__name__)

NonFinitePolicy = Literal["stop", "skip"]


class DivergenceError(RuntimeError):
    """Raised when training diverges under the ``stop`` policy; the message names the step and checkpoints."""

    run_status = "diverged"


def _checkpoint_dir(trainer: L.Trainer) -> Path:
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"


def _unused_path(folder: Path, stem: str) -> Path:
    """``<folder>/<stem>.ckpt``, or ``<stem>-v<n>.ckpt`` when taken: a diverged checkpoint is never overwritten."""
    path, version = folder / f"{stem}.ckpt", 1
    while path.exists():
        version += 1
        path = folder / f"{stem}-v{version}.ckpt"
    return path


class Verdict:
    """The pending decision on one update's loss (see the module docstring); :meth:`finite` takes it.

    ``read()`` returns whether the loss was finite on every rank, waiting for the device if needed.
    """

    def __init__(self, guard: DivergenceGuard, terms: dict[str, torch.Tensor], phase: str,
                 read: Callable[[], bool]) -> None:
        self.guard = guard
        self.terms = terms
        self.phase = phase
        self.read = read

    def finite(self) -> bool:
        """True when the loss was finite on every rank; otherwise stop or skip according to the policy."""
        return self.read() or self.guard.diverged(self.terms, self.phase)


class DivergenceGuard:
    """The divergence guard of one module's training steps, under ``policy`` (see the module docstring)."""

    def __init__(self, module: L.LightningModule, policy: NonFinitePolicy) -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"nonfinite must be 'stop' or 'skip', got {policy!r}")
        self.module = module
        self.policy = policy
        self._pinned: torch.Tensor | None = None

    def check(self, loss: torch.Tensor, phase: str, terms: dict[str, torch.Tensor]) -> Verdict:
        """Start checking ``loss`` (non-finite when any element is): the count of ranks where it is not finite, on
        its way to the host. ``terms``: the update's named loss terms, named in the warning or error. Take the
        verdict with :meth:`Verdict.finite` before the update's optimiser step."""
        loss = loss.detach()
        distributed = self.module.trainer.world_size > 1
        if loss.device.type == "cpu" and not distributed:  # nothing runs ahead of the host: read the loss itself
            return Verdict(self, terms, phase, lambda: math.isfinite(loss.item()) if loss.numel() == 1
                           else bool(torch.isfinite(loss).all()))
        non_finite = torch.isfinite(loss).all().logical_not().int()
        if distributed:
            # torch's all-reduce, not the strategy's reduce: that one adds a barrier, which waits on the host
            torch.distributed.all_reduce(non_finite)
        if non_finite.device.type != "cuda":
            return Verdict(self, terms, phase, lambda: non_finite.item() == 0)
        if self._pinned is None:
            self._pinned = torch.empty((), dtype=non_finite.dtype, pin_memory=True)
        pinned = self._pinned
        pinned.copy_(non_finite, non_blocking=True)
        event = torch.cuda.Event()
        event.record()

        def read() -> bool:
            event.synchronize()
            return pinned.item() == 0

        return Verdict(self, terms, phase, read)

    def diverged(self, terms: dict[str, torch.Tensor], phase: str) -> bool:
        """The loss was not finite on some rank: warn and return False under ``skip``; save and raise under
        ``stop``."""
        trainer = self.module.trainer
        described = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
        return self.act(phase, described, trainer.global_step, trainer.current_epoch,
                        trainer.fit_loop.epoch_loop.batch_idx)

    def act(self, phase: str, described: str, global_step: int, epoch: int, batch: int) -> bool:
        """Apply the policy to a non-finite ``phase`` loss of the update at ``global_step``: warn and return False
        under ``skip``; save the weights and raise :class:`DivergenceError` under ``stop``."""
        trainer = self.module.trainer
        where = f"global step {global_step} (epoch {epoch}, batch {batch})"
        if self.policy == "skip":
            log.warning("non-finite %s loss at %s (%s): step skipped", phase, where, described)
            return False
        path = _unused_path(_checkpoint_dir(trainer), f"diverged-step={global_step}")
        path = trainer.strategy.broadcast(path)  # rank 0's choice: the ranks may see the folder at different times
        trainer.save_checkpoint(path)
        raise DivergenceError(
            f"training diverged: non-finite {phase} loss at {where} ({described}). The weights from before this step "
            f"are saved in {path}; resume with --ckpt_path {path} and a lower --model.init_args.lr (it replaces the "
            "checkpoint's), or set --model.init_args.nonfinite skip to drop such steps."
        )


class DeviceGuard(DivergenceGuard):
    """The guard of a whole training step that runs without the host: decided and applied on the device, reported
    to the host afterwards (the CUDA-graph step of :class:`lightning_modules.adversarial.AdversarialModule`).

    Inside the step, :meth:`decide` writes each update's loss into a report and sets :attr:`found_inf`, which every
    optimiser of the step reads as the fused optimisers' ``found_inf`` (see
    :func:`lightning_modules.cuda_graph.capturable_optimizer`): a fused optimiser skips its whole update on the
    device when it is 1, parameters, moments and step count alike, exactly as if ``step()`` had not been called.
    Under ``skip`` the flag is the update's own; under ``stop`` it latches: from the first non-finite loss on, every
    update is skipped, so the weights stay those from before it. After the step, :meth:`report` sends the report
    to pinned host memory asynchronously and acts on the one that has arrived: on CUDA the previous step's (the
    host never waits for the step it has just launched), elsewhere this step's; :meth:`flush` takes the last one at
    the end of training. Acting: ``skip`` counts the skipped updates into the module's ``skipped_steps`` and warns
    with their steps; ``stop`` saves ``diverged-step=N.ckpt`` (N: the non-finite update's global step) and raises.

    What the deferred read changes under ``stop``, on CUDA: the checkpoint is saved one step later than the
    non-finite update. Its weights and optimiser states are exactly those from before that update (every update
    from it on was skipped on the device); its loop counters, random-generator step and batch-norm statistics are
    one step further, so resuming from it does not repeat the diverged step. Single device only (no rank
    reduction: the whole-step graph refuses DDP).
    """

    def __init__(self, module: L.LightningModule, policy: NonFinitePolicy, phases: list[str],
                 device: torch.device) -> None:
        super().__init__(module, policy)
        self.phases = phases
        self.losses = torch.zeros(len(phases), device=device)
        """The losses of the step's updates, in order (the report)."""
        self.found_inf = torch.zeros((), device=device)
        """1.0 while the update about to step must be skipped (read by the fused optimisers)."""
        self._latched = torch.zeros((), device=device)
        self._pending: tuple[torch.Tensor, torch.cuda.Event | None, tuple[int, int, int]] | None = None

    def decide(self, update: int, loss: torch.Tensor) -> None:
        """Record update ``update``'s loss and set :attr:`found_inf` for its optimiser step (no host sync)."""
        loss = loss.detach().float()
        self.losses[update].copy_(loss)
        non_finite = torch.isfinite(loss).logical_not().float()
        if self.policy == "stop":
            torch.maximum(self._latched, non_finite, out=self._latched)
            non_finite = self._latched
        self.found_inf.copy_(non_finite)

    def report(self, global_step: int, epoch: int, batch: int) -> None:
        """Send this step's report (its first update at ``global_step``) and act on the one that has arrived."""
        on_cuda = self.losses.device.type == "cuda"
        if on_cuda:
            self.flush()
        where = (global_step, epoch, batch)
        if not on_cuda:
            self._pending = (self.losses.clone(), None, where)
            self.flush()
            return
        pinned = torch.empty(self.losses.shape, pin_memory=True)
        pinned.copy_(self.losses, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending = (pinned, event, where)

    def flush(self) -> None:
        """Act on the report sent last, waiting for it if needed."""
        if self._pending is None:
            return
        losses, event, (global_step, epoch, batch) = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        for update, value in enumerate(losses.tolist()):
            if not math.isfinite(value):
                self.module.skipped_steps += 1
                self.act(self.phases[update], f"loss={value:.4g}", global_step + update, epoch, batch)


def divergence_guard(module: L.LightningModule, policy: NonFinitePolicy) -> DivergenceGuard:
    """``module``'s guard under ``policy``, made on first use (it keeps a pinned host buffer for the flag)."""
    guard = module.__dict__.get("_divergence_guard")
    if guard is None or guard.policy != policy:
        guard = DivergenceGuard(module, policy)
        module.__dict__["_divergence_guard"] = guard
    return guard


def losses_are_finite(module: L.LightningModule, losses: dict[str, torch.Tensor], phase: str,
                      policy: NonFinitePolicy) -> bool:
    """Return True when every loss is finite on every rank; otherwise stop or skip according to ``policy``.

    Called before the backward pass, so the weights are still the last good ones; both parts of the check at once
    (see the module docstring). Under ``skip`` the caller drops this optimiser step and counts it.
    """
    values = [value.detach().float().reshape(()) for value in losses.values()]
    loss = values[0] if len(values) == 1 else torch.stack(values)
    return divergence_guard(module, policy).check(loss, phase, losses).finite()
