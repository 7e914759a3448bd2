"""What a whole training step needs to run as one CUDA graph: capturable optimisers, static inputs, capture, replay.

A CUDA graph replays the kernels it recorded, on the memory it recorded them with: its inputs must be copied into
fixed buffers (:class:`StaticBatch`), every value it reads must live on the device (learning rates, the divergence
guard's verdict: :func:`capturable_optimizer`), and nothing in it may wait for the host. :class:`StepGraph` runs a
step function of such buffers: eagerly for its first steps (optimiser states and library workspaces are created
then), then, on CUDA, captured once and replayed. On other devices it always runs eagerly, so everything but the
capture itself runs, and is tested, on the CPU: the graphed step run eagerly on static buffers equals the ordinary
step bit for bit (``tests/lightning_modules/test_cuda_graph_step.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Outputs = dict[str, torch.Tensor]

FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def capturable_optimizer(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor) -> None:
    """Switch ``optimizer`` (Adam, AdamW or SGD) in place to its fused implementation with device learning rates,
    skipping its update on the device whenever ``found_inf`` (a float tensor on the parameters' device) is 1.

    - Every param group becomes ``fused=True, foreach=False`` (read at each ``step()``); its ``lr`` becomes a float32
      tensor on the parameters' device, which torch's LR schedulers update in place (``fill_``), so a replayed step
      reads the current rate.
    - State restored from a checkpoint gets Adam's ``step`` counters as float32 device tensors, as fused Adam keeps
      them.
    - SGD with momentum gets zero momentum buffers where none exist yet: fused SGD's first step leaves them
      uninitialised (``empty_like``) when ``found_inf`` skips it; from zero, ``buf = momentum * 0 + g`` is the first
      step's ``buf = g`` exactly when dampening is 0 (other dampening is refused).
    - ``optimizer.found_inf = found_inf``: fused optimisers skip the whole update (parameters, moments, step count)
      when it is 1.

    Fused kernels round differently from the foreach ones (last-bit differences in the weights).
    """
    if not isinstance(optimizer, FUSED_OPTIMIZERS):
        raise ValueError(f"a captured step needs Adam, AdamW or SGD (fused implementations with found_inf), got "
                         f"{type(optimizer).__name__}")
    for group in optimizer.param_groups:
        device = group["params"][0].device
        if isinstance(optimizer, torch.optim.SGD) and group["momentum"] and group["dampening"]:
            raise ValueError("a captured step needs SGD without dampening (see capturable_optimizer)")
        group["fused"], group["foreach"] = True, False
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        for parameter in group["params"]:
            state = optimizer.state[parameter]
            if "step" in state:
                state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(parameter.device)
            if isinstance(optimizer, torch.optim.SGD) and group["momentum"] and state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
    optimizer.found_inf = found_inf


class StaticBatch:
    """Fixed buffers holding every tensor of a batch (a dict); :meth:`load` copies the next batch into them.

    Non-tensor entries (names) are replaced at every load; a captured step must not depend on them (it would
    replay the values it saw at capture).
    """

    def __init__(self, batch: dict[str, Any]) -> None:
        self.buffers = {key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in batch.items()}

    def load(self, batch: dict[str, Any]) -> dict[str, Any]:
        if batch.keys() != self.buffers.keys():
            raise ValueError(f"a captured step needs batches with the same keys: {sorted(self.buffers)} at capture, "
                             f"now {sorted(batch)}")
        for key, value in batch.items():
            buffer = self.buffers[key]
            if not isinstance(value, torch.Tensor):
                self.buffers[key] = value
            elif value.shape != buffer.shape or value.dtype != buffer.dtype:
                raise ValueError(f"a captured step needs batches of fixed shapes (training loaders drop the last "
                                 f"partial batch): {key} was {tuple(buffer.shape)} {buffer.dtype} at capture, now "
                                 f"{tuple(value.shape)} {value.dtype}")
            else:
                buffer.copy_(value, non_blocking=True)
        return self.buffers


class StepGraph:
    """Runs ``step()`` (a function of static buffers returning a dict of tensors): eagerly for the first
    ``warmup`` calls, then, on CUDA, captured once into a :class:`torch.cuda.CUDAGraph` and replayed at every later
    call (the returned tensors are then the graph's static outputs, overwritten by the next replay); on other
    devices always eagerly.

    On CUDA the warm-up calls run on a side stream, as PyTorch's whole-network capture recipe does (lazy library
    initialisations, cuDNN's autotuning, optimiser states), and ``before_capture()`` runs just before the capture
    (e.g. gradients set to None, so that the captured backward passes allocate them in the graph's memory pool).
    ``generators``: the explicit generators the step draws from, registered with the graph so that each replay
    continues from their state on the host (reseed them before a call to reseed the replay).
    """

    def __init__(self, step: Callable[[], Outputs], device: torch.device, warmup: int = 3,
                 generators: Sequence[torch.Generator] = (), before_capture: Callable[[], None] | None = None) -> None:
        self.step = step
        self.device = device
        self.warmup = warmup
        self.generators = tuple(generators)
        self.before_capture = before_capture
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: Outputs | None = None

    @property
    def captures(self) -> bool:
        return self.device.type == "cuda"

    def __call__(self) -> Outputs:
        self.calls += 1
        if not self.captures:
            return self.step()
        if self.calls <= self.warmup:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                outputs = self.step()
            torch.cuda.current_stream(self.device).wait_stream(side)
            return outputs
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.outputs

    def _capture(self) -> None:
        if self.before_capture is not None:
            self.before_capture()
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        # thread_local: the loader's pin-memory thread may call CUDA during the capture
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.outputs = self.step()
        self.graph = graph
