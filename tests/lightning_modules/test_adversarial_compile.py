"""The opt-in compiled step of AdversarialModule (FrameGAN): same training, same checkpoints, eager evaluation.

Inductor takes minutes to compile even the tiny model on two cores, so the fast tests compile with dynamo's
``aot_eager`` backend (graph capture and AOTAutograd, no code generation): that is where a wrong graph for the
toggled ``requires_grad`` pattern or a checkpoint key change would show. Inductor itself runs in a slow test,
CUDA graphs in a GPU test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_modules.frame_gan import FrameGAN

BATCHES = 2


def _clips(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"frames": torch.randint(0, 256, (4, 5, 3, 32, 32), generator=generator, dtype=torch.uint8)}


class Clips(L.LightningDataModule):
    def __init__(self, batches: int) -> None:
        super().__init__()
        self.batches = batches

    def train_dataloader(self) -> DataLoader:
        return DataLoader([_clips(seed) for seed in range(self.batches)], batch_size=None)


def _fit(model: FrameGAN, tmp_path: Path, batches: int = BATCHES, accelerator: str = "cpu",
         precision: str = "32-true") -> L.Trainer:
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision,
                        max_steps=batches * model.updates_per_batch, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=Clips(batches))
    return trainer


def _model(**options) -> FrameGAN:
    torch.manual_seed(0)
    return FrameGAN(width_multiplier=1 / 16, evaluate_baselines=False, **options)


@pytest.fixture(autouse=True)
def fresh_dynamo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Compile without a structured-trace handler, and leave no compiled code behind for other tests."""
    # pytest attaches its log capture to every non-propagating logger, and a handler on torch's structured-trace
    # logger makes dynamo dump every graph it compiles (three times slower); a propagating logger is left alone.
    monkeypatch.setattr(torch._logging._internal.trace_log, "propagate", True)
    yield
    torch._dynamo.reset()


@pytest.fixture
def aot_eager_compile(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.nn.Module, str, bool]]:
    """Replace ``torch.compile`` by dynamo + AOTAutograd without code generation; record what was compiled how."""
    torch_compile = torch.compile
    calls: list[tuple[torch.nn.Module, str, bool]] = []

    def compile_without_codegen(module: torch.nn.Module, *, mode: str, dynamic: bool) -> torch.nn.Module:
        calls.append((module, mode, dynamic))
        return torch_compile(module, backend="aot_eager", dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", compile_without_codegen)
    return calls


def _assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module, tolerance: float = 0.0) -> None:
    expected_state, actual_state = expected.state_dict(), actual.state_dict()
    assert actual_state.keys() == expected_state.keys()
    for name, tensor in expected_state.items():
        torch.testing.assert_close(actual_state[name], tensor, atol=tolerance, rtol=tolerance, msg=name)


def test_compiled_training_matches_eager(aot_eager_compile, tmp_path: Path):
    eager = _model()
    eager_trainer = _fit(eager, tmp_path / "eager")
    compiled = _model(compile_mode="reduce-overhead")
    compiled_trainer = _fit(compiled, tmp_path / "compiled")

    # Both networks compiled twice (trainable and frozen forward), in the requested mode, with static shapes.
    compiled_modules = [module for module, _, _ in aot_eager_compile]
    assert len(compiled_modules) == 4
    assert sum(module is compiled.generator for module in compiled_modules) == 2
    assert sum(module is compiled.discriminator for module in compiled_modules) == 2
    assert {(mode, dynamic) for _, mode, dynamic in aot_eager_compile} == {("reduce-overhead", False)}
    # aot_eager runs the same kernels, but the traced backward may sum gradient contributions in another order.
    _assert_same_weights(eager, compiled, tolerance=1e-6)
    for name, value in eager_trainer.callback_metrics.items():
        torch.testing.assert_close(compiled_trainer.callback_metrics[name], value, atol=1e-6, rtol=1e-6, msg=name)
    # The compiled wrappers live for one fit only and never in the module's children.
    assert compiled.network("generator") is compiled.generator
    assert not any("_orig_mod" in name for name, _ in compiled.named_modules())


def test_compiled_forwards_serve_training_only(aot_eager_compile):
    model = _model(compile_mode="default")
    model.on_fit_start()
    assert model.network("generator") is not model.generator
    assert model.frozen_network("discriminator") is not model.discriminator
    model.eval()
    assert model.network("generator") is model.generator
    assert model.frozen_network("discriminator") is model.discriminator


def test_checkpoint_saved_with_compile_loads_without_it(aot_eager_compile, tmp_path: Path):
    compiled = _model(compile_mode="reduce-overhead")
    trainer = _fit(compiled, tmp_path)
    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])
    assert checkpoint["hyper_parameters"]["compile_mode"] == "reduce-overhead"

    restored = FrameGAN.load_from_checkpoint(path, compile_mode=None)  # strict: every key must match
    assert restored.compile_mode is None
    _assert_same_weights(compiled, restored)
    assert restored.step_index == compiled.step_index == BATCHES
    # And back: an eager checkpoint loads into a module that compiles.
    recompiled = _model(compile_mode="default")
    recompiled.load_state_dict(restored.state_dict())
    _assert_same_weights(restored, recompiled)


def test_unknown_compile_mode_is_rejected():
    with pytest.raises(ValueError, match="compile_mode"):
        _model(compile_mode="fast")


@pytest.mark.slow
def test_inductor_compiled_training_matches_eager(tmp_path: Path):
    """Real inductor code generation on the CPU (about two minutes on two cores when its cache is cold)."""
    eager = _model()
    _fit(eager, tmp_path / "eager")
    compiled = _model(compile_mode="default")
    _fit(compiled, tmp_path / "compiled")
    _assert_same_weights(eager, compiled, tolerance=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_training_in_bf16_channels_last_tracks_eager(tmp_path: Path):
    """The benchmark's variant: bf16-mixed + channels_last + reduce-overhead (CUDA graphs), against eager.

    Four batches: CUDA graph trees warm up on the first call of a graph, record on the second, replay after.
    """
    on_gpu = {"batches": 4, "accelerator": "gpu", "precision": "bf16-mixed"}
    eager = _model(channels_last=True)
    eager_trainer = _fit(eager, tmp_path / "eager", **on_gpu)
    compiled = _model(channels_last=True, compile_mode="reduce-overhead")
    compiled_trainer = _fit(compiled, tmp_path / "compiled", **on_gpu)
    assert compiled.skipped_steps == 0
    for name, value in eager_trainer.callback_metrics.items():
        torch.testing.assert_close(compiled_trainer.callback_metrics[name], value, atol=0.05, rtol=0.05, msg=name)
    _assert_same_weights(eager.cpu(), compiled.cpu(), tolerance=0.05)
