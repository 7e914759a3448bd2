"""Adversarial training written once: the step every GAN of the suite runs.

A subclass owns ``generator`` and ``discriminator`` (plain ``nn.Module`` s), returns its optimisers as
``(generator_optimizer, discriminator_optimizer)`` and implements two loss functions. A subclass whose
configuration has no adversarial term sets ``discriminator = None`` and returns the generator's optimiser
alone; the same step then runs the generator update only. Learning-rate schedulers returned by
``configure_optimizers`` are stepped once per training step. This base class runs
``n_critic`` discriminator updates then one generator update per batch with manual optimisation:
each update toggles its optimiser (the other network's parameters stop requiring gradients), checks the
losses with the divergence guard, back-propagates through ``manual_backward`` (mixed precision and gradient
scaling come from Lightning's precision plugin), clips gradients if asked and steps.

Randomness: every random number a step draws (latent codes, augmentation) comes from :meth:`step_generator`,
seeded by ``(seed, step index, rank)``; the step index is stored in checkpoints, so a run resumed from any
checkpoint draws exactly the numbers the uninterrupted run would have drawn.

Distributed training: with :class:`genforecast.strategies.SeparateNetworksDDPStrategy` the generator and the
discriminator are wrapped in their own ``DistributedDataParallel`` (see that module for why); subclasses call
networks through :meth:`network` so they get the wrapper when training under DDP and the bare module otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lightning_modules.guard import NonFinitePolicy, losses_are_finite

LossTerms = dict[str, torch.Tensor]


class AdversarialModule(L.LightningModule):
    """Base class of the adversarial models (``FashionCAN``, ``FrameGAN``, the RGB ``SegForecastAR`` variants).

    Args:
        n_critic: discriminator updates per generator update (each on the same batch, fresh noise).
        gradient_clip_val: clip each network's gradient norm to this value; ``None`` disables clipping.
        nonfinite: ``"stop"`` raises with a checkpoint of the last good weights, ``"skip"`` drops the update.
        seed: base seed of the per-step random generators.
    """

    def __init__(self, n_critic: int = 1, gradient_clip_val: float | None = None, nonfinite: NonFinitePolicy = "stop",
                 seed: int = 0) -> None:
        super().__init__()
        if n_critic < 1:
            raise ValueError(f"n_critic must be at least 1, got {n_critic}")
        self.automatic_optimization = False
        self.n_critic = n_critic
        self.gradient_clip_val = gradient_clip_val
        self.nonfinite = nonfinite
        self.seed = seed
        self.step_index = 0
        self.skipped_steps = 0
        self._ddp_wrappers: dict[str, DistributedDataParallel] = {}

    def discriminator_losses(self, batch: Any, generator: torch.Generator) -> LossTerms:
        """Loss terms of one discriminator update; ``"loss"`` is the one back-propagated."""
        raise NotImplementedError

    def generator_losses(self, batch: Any, generator: torch.Generator) -> LossTerms:
        """Loss terms of one generator update; ``"loss"`` is the one back-propagated."""
        raise NotImplementedError

    @property
    def trained_networks(self) -> tuple[str, ...]:
        return tuple(name for name in ("generator", "discriminator") if getattr(self, name, None) is not None)

    def network(self, name: str) -> nn.Module:
        """The network to call in a training step: its DDP wrapper under distributed training, else itself."""
        wrapper = self._ddp_wrappers.get(name)
        return wrapper if wrapper is not None else getattr(self, name)

    def wrap_networks_for_ddp(self, wrap: Callable[[nn.Module], DistributedDataParallel]) -> None:
        self._ddp_wrappers = {name: wrap(getattr(self, name)) for name in self.trained_networks}

    def unwrap_networks(self) -> None:
        self._ddp_wrappers = {}

    @property
    def updates_per_batch(self) -> int:
        """Optimiser steps per training batch; Lightning's ``global_step`` (and ``max_steps``) count these."""
        return 1 + self.n_critic if len(self.trained_networks) > 1 else 1

    def total_training_batches(self) -> int:
        """Batches the trainer will run in this fit: ``max_steps`` in batches, else epochs times epoch length."""
        trainer = self.trainer
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return max(trainer.max_steps // self.updates_per_batch, 1)
        return max(int(trainer.estimated_stepping_batches), 1)

    def step_generator(self, stream: int = 0) -> torch.Generator:
        """A generator on this module's device seeded by ``(seed, step index, rank, stream)``."""
        entropy = [self.seed, self.step_index, self.global_rank, stream]
        state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator(device=self.device).manual_seed(int(state))

    def training_step(self, batch: Any, batch_idx: int) -> None:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        rng = self.step_generator()
        logged: LossTerms = {}
        if len(optimizers) > 1:
            for _ in range(self.n_critic):
                logged |= self._update(optimizers[1], self.discriminator_losses, batch, rng, "discriminator")
        logged |= self._update(optimizers[0], self.generator_losses, batch, rng, "generator")
        schedulers = self.lr_schedulers()
        if schedulers is not None:
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
                scheduler.step()
        self.step_index += 1
        self.log_dict({f"train/{name}": value.detach() for name, value in logged.items()}, prog_bar=False)
        self.log("train/skipped_steps", float(self.skipped_steps))

    def _update(self, optimizer: Any, compute_losses: Callable[[Any, torch.Generator], LossTerms], batch: Any,
                rng: torch.Generator, phase: str) -> LossTerms:
        self.toggle_optimizer(optimizer)
        try:
            terms = compute_losses(batch, rng)
            optimizer.zero_grad(set_to_none=True)
            if not losses_are_finite(self, terms, phase, self.nonfinite):
                self.skipped_steps += 1
                return {}
            self.manual_backward(terms["loss"])
            if self.gradient_clip_val is not None:
                self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val,
                                    gradient_clip_algorithm="norm")
            optimizer.step()
        finally:
            self.untoggle_optimizer(optimizer)
        prefix = "d_" if phase == "discriminator" else "g_"
        return {prefix + name: value for name, value in terms.items()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["adversarial_state"] = {"step_index": self.step_index, "skipped_steps": self.skipped_steps}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("adversarial_state", {})
        self.step_index = state.get("step_index", 0)
        self.skipped_steps = state.get("skipped_steps", 0)
