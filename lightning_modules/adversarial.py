"""Adversarial training written once: the step every GAN of the suite runs.

A subclass owns ``generator`` and ``discriminator`` (plain ``nn.Module`` s), returns its optimisers as
``(generator_optimizer, discriminator_optimizer)`` and implements two loss functions. A subclass whose
configuration has no adversarial term sets ``discriminator = None`` and returns the generator's optimiser
alone; the same step then runs the generator update only. Learning-rate schedulers returned by
``configure_optimizers`` are stepped once per training step. This base class runs
``n_critic`` discriminator updates then one generator update per batch with manual optimisation:
during each update the other networks' parameters stop requiring gradients (as ``toggle_optimizer`` would, from
lists made once per fit: Lightning's toggle walks every optimiser's parameters twice per update); the update
starts the divergence guard's check of its losses (:mod:`lightning_modules.guard`), back-propagates through
``manual_backward`` (mixed precision and gradient scaling come from Lightning's precision plugin), takes the
guard's verdict (exact, for this update, while the device runs the backward pass), clips gradients if asked and
steps. Loss terms are logged only in the steps whose metrics Lightning writes (:mod:`lightning_modules.step_logging`).

Randomness: every random number a step draws (latent codes, augmentation) comes from :meth:`step_generator`,
seeded by ``(seed, step index, rank)``; the step index is stored in checkpoints, so a run resumed from any
checkpoint draws exactly the numbers the uninterrupted run would have drawn. Training steps reseed one generator
rather than making a new one each step.

Distributed training: with :class:`genforecast.strategies.SeparateNetworksDDPStrategy` the generator and the
discriminator are wrapped in their own ``DistributedDataParallel`` (see that module for why); subclasses call
networks through :meth:`network` so they get the wrapper when training under DDP and the bare module otherwise.
A network called inside the *other* network's update (the generator under ``no_grad`` in the discriminator
update, the frozen discriminator in the generator update) is called through :meth:`frozen_network`: the bare
module, whose DDP wrapper would wait for gradients that never come.

Compiled step (``compile_mode``, off by default): at the paper's small settings (FrameGAN: 32x32 patches,
batch 8) a step is a few hundred small kernels and the GPU waits for Python to launch them; the paper-size
FrameGAN generator alone measured 144 eager vs 269 CUDA-graph steps/s at batch 8 on one H100. With
``compile_mode`` set, :meth:`on_fit_start` (after the strategy has moved the module to its device and wrapped it
for DDP) wraps each network's forward in ``torch.compile(mode=compile_mode, dynamic=False)``: the DDP wrapper's
for :meth:`network` (dynamo splits the graph at DDP's bucket boundaries, so gradient all-reduce still overlaps
the backward) and the bare module's for :meth:`frozen_network`. The backward of a compiled forward is compiled
too. ``"reduce-overhead"`` also replays forward and backward as CUDA graphs (CUDA only; on the CPU it compiles
as ``"default"``); ``"max-autotune"`` also benchmarks kernel choices while compiling (minutes). What to know:

- Only the training step uses the compiled forwards (:meth:`network` and :meth:`frozen_network` return them
  while the module is in training mode); validation, prediction and sampling stay eager, so evaluation on full
  frames neither recompiles nor records CUDA graphs for every evaluation shape.
- Shapes must be static: each new input shape compiles (and with CUDA graphs records) a graph of its own, up to
  dynamo's recompile limit, after which that network runs eagerly. Training loaders must therefore drop the last
  partial batch, as the UCF101, Cityscapes and fashion training loaders do (``ShardedBatchSampler``'s
  ``drop_last=True``).
- The first steps are slow: every graph (trainable and frozen forward of each network, with their backwards)
  compiles on first use, tens of seconds each at the paper's widths. Benchmark after warm-up.
- CUDA graphs reuse their output memory at the next replay. The networks' outputs are consumed by the (eager)
  loss functions within the same update, and :meth:`training_step` calls
  ``torch.compiler.cudagraph_mark_step_begin()`` at the start of every step; a subclass that keeps a raw network
  output beyond its update (e.g. for logging) must ``clone()`` it.
- Freezing the other network changes which parameters require gradients between the updates; the trainable and
  the frozen forward are traced separately, each always seeing the same ``requires_grad`` pattern.
- Loss functions, the divergence guard, ``manual_backward`` (inside the precision plugin's autocast, under which
  the graphs are traced), gradient clipping and the optimiser steps stay eager. The guard's verdict waits for each
  update's forward pass after its backward pass has been queued, so the device keeps working meanwhile. Its
  ``stop`` policy saves an ordinary checkpoint, and ``skip`` drops the update after the compiled forward ran.
- Checkpoints are unchanged: the compiled wrappers are kept in plain dicts, not registered as submodules, so
  ``state_dict`` keys carry no ``_orig_mod.`` prefix and a checkpoint saved with compilation loads into a module
  without it, and back (``compile_mode`` is a hyperparameter: override it in ``load_from_checkpoint`` if needed).

Whole-step CUDA graph (``cuda_graph=True``, off by default; not with ``compile_mode``): the whole training step
(every update's losses, the divergence guard, backward pass, gradient clipping and fused optimiser step) is recorded
once as one ``torch.cuda.CUDAGraph`` and replayed every step, so a step costs one launch instead of hundreds and
the host never waits for the device (machinery in :mod:`lightning_modules.cuda_graph`). Per step the host only
copies the batch into static buffers, reseeds the step's generator (registered with the graph), replays, reads
the previous step's guard report, tells Lightning about the updates (its manual-optimisation step counting,
outside the captured region), steps the schedulers (learning rates are device tensors filled in place) and logs
on logging steps. What changes, and what is refused:

- Optimisers become their fused implementations with device learning rates
  (:func:`lightning_modules.cuda_graph.capturable_optimizer`: Adam, AdamW and SGD without dampening; last-bit
  rounding differences from the foreach ones); checkpoints carry those settings.
- The divergence guard decides on the device (:class:`lightning_modules.guard.DeviceGuard`): a non-finite loss
  makes the fused optimiser skip the update on the device, exactly; the host learns of it one step later. Skipped
  updates still count in ``global_step``; under ``stop`` the diverged checkpoint is saved one step later, with the
  weights from before the non-finite update (see :class:`~lightning_modules.guard.DeviceGuard`).
- Lightning's backward and optimiser-step hooks (``on_before_backward``, ``on_after_backward``,
  ``on_before_optimizer_step``) and the precision plugin's backward are not called: the backward pass is
  ``loss.backward()`` inside the precision plugin's autocast, which is what they do for ``32-true`` and
  ``bf16-mixed``. Refused: gradient scaling (``16-mixed``) and more than one device (DDP's hooks cannot be
  captured here).
- Shapes must be static (training loaders drop the last partial batch); the first 3 steps run eagerly (side
  stream) before the capture. Without CUDA the same step runs eagerly on the static buffers, which is what the
  CPU tests compare bit for bit with the ordinary step (``tests/lightning_modules/test_cuda_graph_step.py``; its
  ``gpu`` tests compare the captured replays).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lightning_modules.cuda_graph import StaticBatch, StepGraph, capturable_optimizer
from lightning_modules.guard import DeviceGuard, NonFinitePolicy, divergence_guard
from lightning_modules.step_logging import logs_this_step

LossTerms = dict[str, torch.Tensor]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]


class AdversarialModule(L.LightningModule):
    """Base class of the adversarial models (``FashionCAN``, ``FrameGAN``, the RGB ``SegForecastAR`` variants).

    Args:
        n_critic: discriminator updates per generator update (each on the same batch, fresh noise).
        gradient_clip_val: clip each network's gradient norm to this value; ``None`` disables clipping.
        nonfinite: ``"stop"`` raises with a checkpoint of the last good weights, ``"skip"`` drops the update.
        seed: base seed of the per-step random generators.
        compile_mode: ``torch.compile`` mode of the networks' training forwards (see the module docstring);
            ``None`` trains eagerly.
        cuda_graph: run the whole training step as one CUDA graph (see the module docstring).
    """

    def __init__(self, n_critic: int = 1, gradient_clip_val: float | None = None, nonfinite: NonFinitePolicy = "stop",
                 seed: int = 0, compile_mode: CompileMode | None = None, cuda_graph: bool = False) -> None:
        super().__init__()
        if n_critic < 1:
            raise ValueError(f"n_critic must be at least 1, got {n_critic}")
        if compile_mode is not None and compile_mode not in get_args(CompileMode):
            raise ValueError(f"compile_mode must be None or one of {get_args(CompileMode)}, got {compile_mode!r}")
        if cuda_graph and compile_mode is not None:
            raise ValueError("cuda_graph captures the eager step: use it without compile_mode")
        self.automatic_optimization = False
        self.n_critic = n_critic
        self.gradient_clip_val = gradient_clip_val
        self.nonfinite = nonfinite
        self.seed = seed
        self.step_index = 0
        self.skipped_steps = 0
        self.compile_mode = compile_mode
        self._ddp_wrappers: dict[str, DistributedDataParallel] = {}
        # Plain dicts, not ModuleDicts: compiled wrappers must stay out of state_dict (no "_orig_mod." keys).
        self._compiled_networks: dict[str, nn.Module] = {}
        self._compiled_frozen_networks: dict[str, nn.Module] = {}
        self._frozen_parameters: dict[int, list[nn.Parameter]] = {}
        self._training_rng: torch.Generator | None = None
        self.cuda_graph = cuda_graph
        self._step_graph: StepGraph | None = None
        self._static_batch: StaticBatch | None = None
        self._device_guard: DeviceGuard | None = None

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
        """The network to call for its own update: its DDP wrapper under distributed training, else itself;
        compiled while training when ``compile_mode`` is set."""
        if self.training and name in self._compiled_networks:
            return self._compiled_networks[name]
        wrapper = self._ddp_wrappers.get(name)
        return wrapper if wrapper is not None else getattr(self, name)

    def frozen_network(self, name: str) -> nn.Module:
        """The network to call in the other network's update: always the bare module (its parameters get no
        gradient there, so its DDP wrapper must not see the call); compiled while training when ``compile_mode``
        is set."""
        if self.training and name in self._compiled_frozen_networks:
            return self._compiled_frozen_networks[name]
        return getattr(self, name)

    def wrap_networks_for_ddp(self, wrap: Callable[[nn.Module], DistributedDataParallel]) -> None:
        self._ddp_wrappers = {name: wrap(getattr(self, name)) for name in self.trained_networks}

    def unwrap_networks(self) -> None:
        self._ddp_wrappers = {}
        self._drop_compiled_networks()  # the compiled forwards of the DDP wrappers must not outlive them

    def on_fit_start(self) -> None:
        """Compile the training forwards: the module is on its device and DDP-wrapped by now (see module docstring).

        The trainable and the frozen forward of a network are compiled separately (under DDP they are different
        modules anyway); ``torch.compile`` is lazy, so nothing is compiled before the first step.
        """
        self._drop_compiled_networks()
        if self.compile_mode is None:
            return
        # dynamic=False: one graph per input shape; CUDA graphs replay fixed shapes anyway, and static shapes get
        # the best kernels.
        for name in self.trained_networks:
            self._compiled_networks[name] = torch.compile(self.network(name), mode=self.compile_mode, dynamic=False)
            self._compiled_frozen_networks[name] = torch.compile(getattr(self, name), mode=self.compile_mode,
                                                                 dynamic=False)

    def teardown(self, stage: str) -> None:
        """Compiled forwards serve one fit; the next one compiles for its own device and wrappers; the frozen
        parameter lists and the training generator belong to this fit's optimisers and device."""
        self._drop_compiled_networks()
        self._frozen_parameters = {}
        self._training_rng = None
        self._step_graph = self._static_batch = self._device_guard = None

    def _drop_compiled_networks(self) -> None:
        self._compiled_networks = {}
        self._compiled_frozen_networks = {}

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
        return self.seeded_generator(self.seed, self.step_index, self.global_rank, stream)

    def seeded_generator(self, *entropy: int) -> torch.Generator:
        """A generator on this module's device seeded by the integers ``entropy`` (mixed by ``np.random.SeedSequence``,
        so nearby tuples give unrelated streams)."""
        return torch.Generator(device=self.device).manual_seed(_mixed_seed(entropy))

    def _step_rng(self) -> torch.Generator:
        """The training step's generator: :meth:`step_generator`'s numbers from one generator reseeded every step."""
        if self._training_rng is None or self._training_rng.device != self.device:
            self._training_rng = torch.Generator(device=self.device)
        return self._training_rng.manual_seed(_mixed_seed((self.seed, self.step_index, self.global_rank, 0)))

    def training_step(self, batch: Any, batch_idx: int) -> None:
        if self.cuda_graph:
            logged = self._graphed_updates(batch)
        else:
            if self.compile_mode == "reduce-overhead":
                # A new step begins: CUDA graph trees may now reuse the memory of the previous step's graph outputs.
                torch.compiler.cudagraph_mark_step_begin()
            rng = self._step_rng()
            logged: LossTerms = {}
            for optimizer, compute_losses, phase in self._updates():
                logged |= self._update(optimizer, compute_losses, batch, rng, phase)
        schedulers = self.lr_schedulers()
        if schedulers is not None:
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
                scheduler.step()
        self.step_index += 1
        if logs_this_step(self):  # clones: a replayed graph overwrites its outputs at the next step
            self.log_dict({f"train/{name}": value.detach().clone() for name, value in logged.items()}
                          | {"train/skipped_steps": float(self.skipped_steps)})

    def _update(self, optimizer: Any, compute_losses: Callable[[Any, torch.Generator], LossTerms], batch: Any,
                rng: torch.Generator, phase: str) -> LossTerms:
        frozen = self._other_networks_parameters(optimizer)
        for parameter in frozen:
            parameter.requires_grad_(False)
        try:
            terms = compute_losses(batch, rng)
            verdict = divergence_guard(self, self.nonfinite).check(terms["loss"], phase, terms)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(terms["loss"])
            if not verdict.finite():
                optimizer.zero_grad(set_to_none=True)  # the skipped update's gradients are not finite
                self.skipped_steps += 1
                return {}
            if self.gradient_clip_val is not None:
                self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val,
                                    gradient_clip_algorithm="norm")
            optimizer.step()
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)
        prefix = "d_" if phase == "discriminator" else "g_"
        return {prefix + name: value for name, value in terms.items()}

    def _other_networks_parameters(self, optimizer: Any) -> list[nn.Parameter]:
        """The parameters of the other optimisers (not ``optimizer``'s) that require gradients when the fit starts:
        frozen during ``optimizer``'s update."""
        key = id(optimizer)
        if key not in self._frozen_parameters:
            own = {id(p) for group in optimizer.param_groups for p in group["params"]}
            others = {id(p): p for other in self.trainer.optimizers for group in other.param_groups
                      for p in group["params"] if id(p) not in own and p.requires_grad}
            self._frozen_parameters[key] = list(others.values())
        return self._frozen_parameters[key]

    # ---- the whole-step CUDA graph (see the module docstring) ----------------------------------------------

    def _updates(self) -> list[tuple[Any, Callable[[Any, torch.Generator], LossTerms], str]]:
        """The step's updates in order: ``(Lightning optimiser, loss function, phase)``."""
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        updates = [(optimizers[1], self.discriminator_losses, "discriminator")] * self.n_critic \
            if len(optimizers) > 1 else []
        return [*updates, (optimizers[0], self.generator_losses, "generator")]

    def _prepare_step_graph(self, batch: Any) -> None:
        trainer = self.trainer
        if trainer.world_size > 1:
            raise ValueError("cuda_graph runs on one device: DDP's gradient hooks cannot be captured")
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            raise ValueError("cuda_graph cannot capture gradient scaling (16-mixed): use bf16-mixed or 32-true")
        updates = self._updates()
        self._device_guard = DeviceGuard(self, self.nonfinite, [phase for _, _, phase in updates], self.device)
        for optimizer in trainer.optimizers:
            capturable_optimizer(optimizer, self._device_guard.found_inf)
        self._static_batch = StaticBatch(batch)

        def before_capture() -> None:
            for optimizer in trainer.optimizers:
                optimizer.zero_grad(set_to_none=True)
                for group in optimizer.param_groups:
                    group["capturable"] = True  # Adam refuses capture otherwise (SGD has no such setting)

        self._step_graph = StepGraph(self._whole_step, self.device, generators=[self._step_rng()],
                                     before_capture=before_capture)

    def _whole_step(self) -> LossTerms:
        """Every update of the step on the static batch, the guard's decision applied on the device (capturable)."""
        batch, rng, terms = self._static_batch.buffers, self._training_rng, {}
        for index, (optimizer, compute_losses, phase) in enumerate(self._updates()):
            frozen = self._other_networks_parameters(optimizer)
            for parameter in frozen:
                parameter.requires_grad_(False)
            update_terms = compute_losses(batch, rng)
            self._device_guard.decide(index, update_terms["loss"])
            optimizer.zero_grad(set_to_none=True)
            update_terms["loss"].backward()
            if self.gradient_clip_val is not None:
                parameters = [p for group in optimizer.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(parameters, self.gradient_clip_val)
            optimizer.optimizer.step()
            for parameter in frozen:
                parameter.requires_grad_(True)
            prefix = "d_" if phase == "discriminator" else "g_"
            terms |= {prefix + name: value for name, value in update_terms.items()}
        return terms

    def _graphed_updates(self, batch: Any) -> LossTerms:
        """The step's updates through the whole-step graph; returns their loss terms (the graph's outputs)."""
        if self._step_graph is None:
            self._prepare_step_graph(batch)
        trainer = self.trainer
        self._static_batch.load(batch)
        self._step_rng()  # reseeds the generator the graph replays from
        first_update = trainer.global_step
        terms = self._step_graph()
        self._device_guard.report(first_update, trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx)
        for optimizer, _, _ in self._updates():  # Lightning's step counting, outside the graph
            optimizer._on_before_step()
            optimizer._on_after_step()
        return terms

    def on_train_end(self) -> None:
        """The whole-step graph's guard reports one step late: act on the last step's report."""
        if self._device_guard is not None:
            self._device_guard.flush()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["adversarial_state"] = {"step_index": self.step_index, "skipped_steps": self.skipped_steps}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("adversarial_state", {})
        self.step_index = state.get("step_index", 0)
        self.skipped_steps = state.get("skipped_steps", 0)


def _mixed_seed(entropy: tuple[int, ...]) -> int:
    """One 64-bit seed from the integers ``entropy``, mixed by ``np.random.SeedSequence``."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0])
