"""Peak training memory of every paper configuration on an 80 GB card, estimated without a GPU.

Each configuration's model is built for real on the CPU, then its parameters and buffers are swapped for fake
tensors (``torch._subclasses.fake_tensor.FakeTensorMode``: shapes, dtypes and storages without data) and two
training steps run on fake batches of the paper's shapes: each optimiser's update as the suite runs it (adversarial
modules: discriminator then generator, each with the other network's parameters frozen as
``LightningModule.toggle_optimizer`` does; the others: loss, backward, optimiser step), under
``torch.autocast("cpu", bfloat16)`` for the bf16-mixed column (the GPU preset's precision). No kernel runs, so a
1024x2048 F2F step takes seconds.

:class:`PeakMemoryTracker` (a ``TorchDispatchMode``) counts the bytes of every live tensor storage: the model's
parameters and buffers, then every op's outputs (activations kept for backward, gradients, optimiser states,
temporaries) until their storage dies. Its peak over the two steps is the estimate of
``torch.cuda.max_memory_allocated``; ops that run outside the dispatcher (cuDNN/cuBLAS workspaces) and the CUDA
context are not in it, so a configuration **fits** when ``peak <= 0.9 x (80 GiB - 1 GiB)``: 1 GiB for the context
and library workspaces, 10% for the caching allocator's rounding and fragmentation. A configuration that does not fit
is shown again with the largest batch that fits and the gradient accumulation that keeps its effective batch.

Configurations (batch sizes and settings from ``configs/``): F2F stages P5, P4, P3 and P2 at 1024x2048 (batch 4,
short term, 5 frames, the detector extracting the features in the step as the configs train; and from the feature
cache), AR fine-tuning of the four levels over 3 steps (7 frames); FrameGAN Adv+GDL at batch 8 and 256 (32x32
patches, the paper's widths); S2S and the joint forecaster in ``ar_finetune`` (3 steps, 64x64 crops, batch 4);
FashionCAN at 64 to 512 px (batch 64, base width 64).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

CARD_GIB = 80.0
CONTEXT_GIB = 1.0
ALLOCATOR_MARGIN = 0.9
FIT_LIMIT_BYTES = ALLOCATOR_MARGIN * (CARD_GIB - CONTEXT_GIB) * 2**30
"""The largest tracked peak taken to fit an 80 GB card (see the module docstring)."""
PRECISIONS = ("32-true", "bf16-mixed")


class PeakMemoryTracker(TorchDispatchMode):
    """Bytes of live tensor storages (each storage counted once, views included) and their peak.

    ``track(tensors)`` registers tensors that exist before the mode is entered (parameters, buffers, inputs); inside
    the mode every op's tensor outputs are registered. A storage leaves the count when it is freed (a weak reference's
    callback), so ``peak``, taken after every op, is the largest sum of live storages with the op's inputs and
    outputs alive together. Works on real and fake tensors alike.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, weakref.ref] = {}
        self.current = 0
        self.peak = 0

    def track(self, tensors: Any) -> None:
        for tensor in tree_leaves(tensors):
            if isinstance(tensor, torch.Tensor):
                self._register(tensor)
        self.peak = max(self.peak, self.current)

    def _register(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()  # the same Python object for as long as the storage lives
        key = storage._cdata
        if key not in self._live:
            size = storage.nbytes()
            self._live[key] = weakref.ref(storage, functools.partial(self._release, key, size))
            self.current += size

    def _release(self, key: int, size: int, _reference: weakref.ref) -> None:
        if self._live.pop(key, None) is not None:
            self.current -= size

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        output = func(*args, **(kwargs or {}))
        self.track(output)
        return output


def fake_module(module: nn.Module, mode: FakeTensorMode) -> nn.Module:
    """``module`` with every parameter and buffer replaced by a fake tensor of the same shape and dtype (in place)."""
    for submodule in module.modules():
        for name, parameter in list(submodule._parameters.items()):
            if parameter is not None:
                submodule._parameters[name] = nn.Parameter(mode.from_tensor(parameter),
                                                           requires_grad=parameter.requires_grad)
        for name, buffer in list(submodule._buffers.items()):
            if buffer is not None:
                submodule._buffers[name] = mode.from_tensor(buffer)
    return module


def _optimizers(model: L.LightningModule) -> list[torch.optim.Optimizer]:
    """The optimisers of ``configure_optimizers`` (schedulers dropped), in order."""
    configured = model.configure_optimizers()
    if isinstance(configured, dict):
        configured = configured["optimizer"]
    if isinstance(configured, tuple) and len(configured) == 2 and isinstance(configured[1], list):
        configured = configured[0]  # ([optimizers], [schedulers])
    optimizers = list(configured) if isinstance(configured, list | tuple) else [configured]
    return [item["optimizer"] if isinstance(item, dict) else item for item in optimizers]


@contextlib.contextmanager
def _only_trained(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Parameters outside ``optimizer`` get no gradient meanwhile, as ``LightningModule.toggle_optimizer`` does."""
    trained = {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}
    frozen = [parameter for parameter in model.parameters() if id(parameter) not in trained
              and parameter.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


Step = Callable[[], None]


def adversarial_step(model: L.LightningModule, batch: dict[str, torch.Tensor]) -> Step:
    """One :class:`lightning_modules.adversarial.AdversarialModule` step: discriminator update, generator update."""
    optimizers = _optimizers(model)
    updates = [(optimizers[0], model.generator_losses)]
    if len(optimizers) > 1:
        updates.insert(0, (optimizers[1], model.discriminator_losses))
    rng = torch.Generator().manual_seed(0)

    def step() -> None:
        for optimizer, losses in updates:
            with _only_trained(model, optimizer):
                loss = losses(batch, rng)["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return step


def loss_step(model: L.LightningModule, loss: Callable[[], torch.Tensor]) -> Step:
    """Loss, backward and the (single) optimiser's step, gradients set to None first as Lightning does."""
    optimizer = _optimizers(model)[0]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()
    return step


@dataclass(frozen=True)
class Case:
    """One paper configuration: ``build(batch_size, scale)`` returns ``(model, batch_factory)`` on the CPU, with
    ``batch_factory()`` making the batch (called under fake mode) and ``step_for(model, batch)`` its step."""

    name: str
    batch_size: int
    setting: str
    build: Callable[[int, int], tuple[L.LightningModule, Callable[[], dict[str, torch.Tensor]]]]
    step_for: Callable[[L.LightningModule, dict[str, torch.Tensor]], Step]


def _attach_trainer(model: L.LightningModule) -> L.LightningModule:
    """A bare Trainer (never fitted) for modules whose ``configure_optimizers`` reads ``max_steps``."""
    model.trainer = L.Trainer(max_steps=1000, accelerator="cpu", logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False)
    return model


def _scaled(size: int, scale: int, minimum: int = 1) -> int:
    return max(minimum, size // scale)


# ---- F2F -----------------------------------------------------------------------------------------------------------

F2F_RESOLUTION = (1024, 2048)


def _f2f_detector(scale: int) -> Path:
    from genforecast.bench.f2f import detector_file

    return detector_file((_scaled(F2F_RESOLUTION[0], scale), _scaled(F2F_RESOLUTION[1], scale)), on_gpu=True)


def _f2f_case(stage: str, cached: bool) -> Case:
    from genforecast.bench.f2f import stage_config

    config = stage_config(stage)
    model_args, data_args = config["model"]["init_args"], config["data"]["init_args"]
    batch_size = data_args["batch_size"]
    frames = data_args["num_inputs"] + model_args["horizon_steps"]
    levels = model_args["train_levels"]

    def build(batch: int, scale: int) -> tuple[L.LightningModule, Callable[[], dict[str, torch.Tensor]]]:
        from lightning_modules.f2f_forecaster import F2FForecaster

        detector = _f2f_detector(scale)
        model = F2FForecaster(
            str(detector), expected_detector=model_args["expected_detector"], train_levels=levels,
            p2_scales=model_args["p2_scales"], width_multiplier=model_args["width_multiplier"],
            mode=model_args["mode"], horizon_steps=model_args["horizon_steps"], num_input_frames=data_args["num_inputs"],
            optimizer=model_args["optimizer"], lr=model_args["lr"], momentum=model_args.get("momentum", 0.9),
            evaluate_baselines=False)
        height, width = _scaled(F2F_RESOLUTION[0], scale, 32), _scaled(F2F_RESOLUTION[1], scale, 32)
        strides = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}

        def make_batch() -> dict[str, torch.Tensor]:
            if cached:
                return {level: torch.empty(batch, frames, 256, height // strides[level], width // strides[level])
                        for level in levels}
            return {"frames": torch.empty(batch, frames, 3, height, width, dtype=torch.uint8)}
        return model, make_batch

    def step_for(model: L.LightningModule, batch: dict[str, torch.Tensor]) -> Step:
        def loss() -> torch.Tensor:
            sequence = batch if cached else model.features(batch["frames"])[0]
            return sum(model.training_losses(sequence).values())
        return loss_step(model, loss)

    source = "from the feature cache" if cached else "detector in the step"
    name = f"F2F {stage.upper() if stage != 'ar_finetune' else 'AR fine-tuning'}"
    return Case(f"{name} ({'cached' if cached else 'end to end'})", batch_size,
                f"1024x2048, {frames} frames, levels {'/'.join(levels)}, {source}", build, step_for)


# ---- FrameGAN, S2S, joint, FashionCAN -------------------------------------------------------------------------------


def _framegan_case(batch_size: int) -> Case:
    def build(batch: int, scale: int) -> tuple[L.LightningModule, Callable[[], dict[str, torch.Tensor]]]:
        from lightning_modules.frame_gan import FrameGAN

        patch = 32  # the discriminator's unpadded convolutions need the paper's patch; small at any scale
        model = _attach_trainer(FrameGAN(patch_size=patch, evaluate_baselines=False))
        return model, lambda: {"frames": torch.empty(batch, 5, 3, patch, patch, dtype=torch.uint8)}

    return Case(f"FrameGAN Adv+GDL batch {batch_size}", batch_size, "32x32 patches, 4 scales, paper widths", build,
                adversarial_step)


def _s2s_case() -> Case:
    def build(batch: int, scale: int) -> tuple[L.LightningModule, Callable[[], dict[str, torch.Tensor]]]:
        from lightning_modules.seg_forecast import SegForecastAR

        crop = 64  # small at any scale
        model = SegForecastAR(modality="S2S", architecture="multiscale", mode="ar_finetune", horizon_steps=3,
                              crop_size=crop, evaluate_baselines=False)
        return model, lambda: {"scores": torch.empty(batch, 7, 19, crop, crop, dtype=torch.float16)}

    return Case("S2S ar_finetune", 4, "64x64 crops, 3 steps with BPTT, paper widths", build, adversarial_step)


def _joint_case() -> Case:
    def build(batch: int, scale: int) -> tuple[L.LightningModule, Callable[[], dict[str, torch.Tensor]]]:
        from lightning_modules.joint_forecaster import JointForecaster

        crop = 64  # small at any scale
        model = JointForecaster(width_multiplier=0.65, mode="ar_finetune", horizon_steps=3, evaluate_baselines=False)
        return model, lambda: {"frame_classes": torch.empty(batch, 7, crop, crop, dtype=torch.uint8),
                               "frame_values": torch.empty(batch, 7, crop, crop, dtype=torch.float16)}

    def step_for(model: L.LightningModule, batch: dict[str, torch.Tensor]) -> Step:
        return loss_step(model, lambda: model.training_loss(batch))

    return Case("Joint forecaster ar_finetune", 4, "64x64 crops, 3 steps with BPTT, width 0.65 (0.8M)", build,
                step_for)


def _fashion_case(resolution: int) -> Case:
    def build(batch: int, scale: int) -> tuple[L.LightningModule, Callable[[], dict[str, torch.Tensor]]]:
        from lightning_modules.fashion_can import FashionCAN

        size = _scaled(resolution, scale, 32)  # DCGAN needs a power of two >= 32
        model = FashionCAN(resolution=size, base_channels=64, creativity="can")
        return model, lambda: {"image": torch.empty(batch, 3, size, size, dtype=torch.uint8),
                               "mask": torch.empty(batch, 1, size, size, dtype=torch.uint8),
                               "shape": torch.zeros(batch, dtype=torch.long),
                               "texture": torch.zeros(batch, dtype=torch.long)}

    return Case(f"FashionCAN {resolution} px", 64, "batch 64, base width 64, CAN loss", build, adversarial_step)


def cases() -> list[Case]:
    """Every paper configuration, in the order of the table."""
    f2f = [_f2f_case(stage, cached) for stage in ("p5", "p4", "p3", "p2") for cached in (False, True)]
    return [*f2f, _f2f_case("ar_finetune", False), _f2f_case("ar_finetune", True), _framegan_case(8),
            _framegan_case(256), _s2s_case(), _joint_case(), *(_fashion_case(size) for size in (64, 128, 256, 512))]


@dataclass
class Estimate:
    name: str
    setting: str
    batch_size: int
    precision: str
    model_bytes: int
    peak_bytes: int

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= FIT_LIMIT_BYTES


def estimate(case: Case, batch_size: int, precision: str, scale: int = 1, steps: int = 2) -> Estimate:
    """Tracked peak of ``steps`` training steps of ``case`` at ``batch_size`` in ``precision`` (fake tensors)."""
    torch.manual_seed(0)
    model, make_batch = case.build(batch_size, scale)
    model.train()
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    fake_module(model, mode)
    tracker = PeakMemoryTracker()
    tracker.track([*model.parameters(), *model.buffers()])
    model_bytes = tracker.current
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    with mode:
        batch = make_batch()
        tracker.track(batch)
        step = case.step_for(model, batch)
        with tracker, autocast:
            for _ in range(steps):
                step()
    return Estimate(case.name, case.setting, batch_size, precision, model_bytes, tracker.peak)


def fitting_batch(case: Case, precision: str, scale: int) -> Estimate | None:
    """The largest power-of-two fraction of the case's batch that fits, or None when even batch 1 does not."""
    batch_size = case.batch_size // 2
    while batch_size >= 1:
        result = estimate(case, batch_size, precision, scale)
        if result.fits:
            return result
        batch_size //= 2
    return None


def format_table(rows: list[tuple[Estimate, Estimate | None]]) -> str:
    """Markdown table of the estimates; a row that does not fit is followed by its fitting change."""
    lines = ["| configuration | setting | batch | precision | parameters + buffers | peak (tracked) | fits 80 GB |",
             "|---|---|---|---|---|---|---|"]
    for result, change in rows:
        lines.append(f"| {result.name} | {result.setting} | {result.batch_size} | {result.precision} | "
                     f"{result.model_bytes / 2**30:.2f} GiB | {result.peak_bytes / 2**30:.2f} GiB | "
                     f"{'yes' if result.fits else 'NO'} |")
        if not result.fits:
            if change is None:
                lines.append(f"| {result.name}: change | batch 1 does not fit either: needs activation "
                             f"checkpointing | 1 | {result.precision} | | | NO |")
                continue
            accumulation = math.ceil(result.batch_size / change.batch_size)
            lines.append(f"| {result.name}: change | batch {change.batch_size} x {accumulation} accumulated "
                         f"(effective {change.batch_size * accumulation}) | {change.batch_size} | {change.precision} | "
                         f"{change.model_bytes / 2**30:.2f} GiB | {change.peak_bytes / 2**30:.2f} GiB | yes |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = [case.name for case in cases()]
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", default=None,
                        help=f"configurations to estimate (default: all): {'; '.join(names)}")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--scale", type=int, default=1,
                        help="divide F2F's and FashionCAN's sizes by this (1 = the papers'; larger for tests)")


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    selected = [case for case in cases() if args.only is None or case.name in args.only]
    rows = []
    for case in selected:
        for precision in args.precisions:
            result = estimate(case, case.batch_size, precision, args.scale)
            rows.append((result, None if result.fits else fitting_batch(case, precision, args.scale)))
    scale_note = "" if args.scale == 1 else f" (sizes divided by {args.scale})"
    print(f"\nPeak training memory, estimated with fake tensors{scale_note}; fits when the tracked peak is at most "
          f"{FIT_LIMIT_BYTES / 2**30:.1f} GiB (0.9 x (80 - 1) GiB):")
    print(format_table(rows))
