"""The whole-step CUDA graph without CUDA: capturable optimisers, static buffers, the step run eagerly on them (bit for
bit the ordinary step), and the divergence guard on the device. On a GPU the same step is captured and replayed."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_modules.cuda_graph import StaticBatch, capturable_optimizer
from lightning_modules.fashion_can import FashionCAN
from lightning_modules.frame_gan import FrameGAN
from lightning_modules.guard import DivergenceError

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                                  reason="needs a CUDA device")])]


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1),
                                  lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
                                  lambda p: torch.optim.Adam(p, lr=0.01)], ids=["sgd", "sgd-nesterov", "adam"])
def test_capturable_optimizer_skips_exactly_and_follows_its_schedule(make):
    """Converted in place: the fused step with a device learning rate that the schedule fills in place, and a
    ``found_inf`` step (the first one too, where fused SGD would leave its momentum uninitialised) as if skipped."""
    inputs = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))

    def train(skip_at: int, convert: bool) -> list[torch.Tensor]:
        net = _net()
        optimizer = make(net.parameters())
        found_inf = torch.zeros(())
        if convert:
            capturable_optimizer(optimizer, found_inf)
        base_lr = float(optimizer.param_groups[0]["lr"])
        lr = optimizer.param_groups[0]["lr"]
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
        for step in range(4):
            optimizer.zero_grad(set_to_none=True)
            net(inputs).square().mean().backward()
            found_inf.fill_(float(step == skip_at))
            if convert or step != skip_at:
                optimizer.step()
            schedule.step()
        if convert:
            assert optimizer.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(base_lr / 5)
        return [parameter.detach().clone() for parameter in net.parameters()]

    for skip_at in (None, 0, 2):
        fused = train(skip_at, convert=True)
        assert all(torch.isfinite(p).all() for p in fused)
        for ours, reference in zip(fused, train(skip_at, convert=False)):
            torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-7)  # fused kernels round differently


def test_static_batch_keeps_its_buffers_and_refuses_other_shapes():
    first = {"frames": torch.zeros(2, 3), "name": ["a", "b"]}
    static = StaticBatch(first)
    buffer = static.buffers["frames"]
    loaded = static.load({"frames": torch.ones(2, 3), "name": ["c", "d"]})
    assert loaded["frames"] is buffer and buffer.eq(1).all() and loaded["name"] == ["c", "d"]
    with pytest.raises(ValueError, match="fixed shapes"):
        static.load({"frames": torch.ones(1, 3), "name": ["e"]})


class NaNAt:
    """Mixin: the generator loss becomes NaN at one step index; ``captured`` says whether the step was replayed."""

    nan_at: int | None = None
    captured = False

    def generator_losses(self, batch, rng):
        terms = super().generator_losses(batch, rng)
        if self.step_index == self.nan_at:
            terms["loss"] = terms["loss"] * math.nan
        return terms

    def on_train_end(self) -> None:
        self.captured = self._step_graph is not None and self._step_graph.graph is not None
        super().on_train_end()


class ConvertedOptimizers:
    """Mixin for the reference run: the ordinary step with the graph's (fused, device-lr) optimisers."""

    def on_train_start(self) -> None:
        for optimizer in self.trainer.optimizers:
            capturable_optimizer(optimizer, torch.zeros((), device=self.device))


class FashionNaN(NaNAt, FashionCAN):
    pass


class FashionReference(ConvertedOptimizers, NaNAt, FashionCAN):
    pass


class FrameGANNaN(NaNAt, FrameGAN):
    pass


class FrameGANReference(ConvertedOptimizers, NaNAt, FrameGAN):
    pass


def _fashion_batches(count: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    return [{"image": torch.randint(0, 256, (4, 3, 32, 32), generator=generator, dtype=torch.uint8),
             "shape": torch.randint(0, 7, (4,), generator=generator),
             "texture": torch.randint(0, 7, (4,), generator=generator)} for _ in range(count)]


def _clip_batches(count: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(4)
    return [{"frames": torch.randint(0, 256, (2, 5, 3, 32, 32), generator=generator, dtype=torch.uint8)}
            for _ in range(count)]


MODELS = {
    "fashion": (FashionNaN, FashionReference, {"resolution": 32, "base_channels": 8}, _fashion_batches),
    "framegan": (FrameGANNaN, FrameGANReference, {"width_multiplier": 0.05, "evaluate_baselines": False,
                                                  "gradient_clip_val": 1.0}, _clip_batches),
}


def _fit(model: L.LightningModule, batches: list, tmp_path: Path, device: str) -> L.Trainer:
    trainer = L.Trainer(accelerator=device, devices=1, max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, log_every_n_steps=2,
                        default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return trainer


def _trained(kind: str, graphed: bool, tmp_path: Path, device: str = "cpu", nan_at: int | None = None,
             nonfinite: str = "stop", steps: int = 5) -> L.LightningModule:
    graph_class, reference_class, options, batches = MODELS[kind]
    torch.manual_seed(0)
    model = (graph_class if graphed else reference_class)(cuda_graph=graphed, nonfinite=nonfinite, **options)
    model.nan_at = nan_at
    _fit(model, batches(steps), tmp_path / ("graphed" if graphed else "reference"), device)
    return model


def _assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], exact: bool) -> None:
    assert first.keys() == second.keys()
    for key in first:
        if exact:
            assert torch.equal(first[key].cpu(), second[key].cpu()), key
        else:
            torch.testing.assert_close(first[key].cpu(), second[key].cpu(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", list(MODELS))
def test_graphed_step_equals_the_ordinary_step(kind: str, device: str, tmp_path: Path):
    """Discriminator and generator updates, random draws (FashionCAN's latents and jitter), clipping and the
    learning-rate schedule (FrameGAN), on static buffers: bit for bit the ordinary step on the CPU (eagerly), the same
    within kernel nondeterminism when captured and replayed on a GPU (steps 4 and 5 are replays)."""
    graphed = _trained(kind, True, tmp_path, device)
    reference = _trained(kind, False, tmp_path, device)
    assert graphed.step_index == reference.step_index == 5
    assert graphed.trainer.global_step == reference.trainer.global_step == 10
    assert graphed.captured == (device == "cuda")
    _assert_same_weights(graphed.state_dict(), reference.state_dict(), exact=device == "cpu")
    logged = graphed.trainer.logged_metrics
    assert {"train/d_loss", "train/g_loss", "train/skipped_steps"} <= logged.keys()


@pytest.mark.parametrize("device", DEVICES)
def test_graphed_guard_skips_on_the_device(device: str, tmp_path: Path):
    """Under ``skip`` the fused optimiser drops the non-finite update on the device: the same weights as the ordinary
    step that does not call ``step()``, and the update is counted when the host reads the report."""
    graphed = _trained("fashion", True, tmp_path, device, nan_at=2, nonfinite="skip")
    reference = _trained("fashion", False, tmp_path, device, nan_at=2, nonfinite="skip")
    assert graphed.skipped_steps == reference.skipped_steps == 1
    _assert_same_weights(graphed.state_dict(), reference.state_dict(), exact=device == "cpu")


def test_graphed_guard_stops_with_the_weights_from_before_the_non_finite_update(tmp_path: Path):
    """Under ``stop`` the run stops naming the non-finite update's step, with a checkpoint whose weights are those of
    the ordinary step's diverged checkpoint (discriminator updated, generator not)."""
    checkpoints = []
    for graphed in (True, False):
        with pytest.raises(DivergenceError, match=r"non-finite generator loss at global step 5") as error:
            _trained("fashion", graphed, tmp_path, nan_at=2)
        checkpoints.append(Path(str(error.value).split("saved in ")[1].split(";")[0]))
    graphed_state, reference_state = (torch.load(path, weights_only=True)["state_dict"] for path in checkpoints)
    assert all(torch.isfinite(value).all() for value in graphed_state.values() if value.is_floating_point())
    _assert_same_weights(graphed_state, reference_state, exact=True)


def test_graph_option_refuses_what_it_cannot_capture():
    with pytest.raises(ValueError, match="without compile_mode"):
        FrameGAN(cuda_graph=True, compile_mode="default")
    optimizer = torch.optim.RMSprop(_net().parameters())
    with pytest.raises(ValueError, match="Adam, AdamW or SGD"):
        capturable_optimizer(optimizer, torch.zeros(()))
    optimizer = torch.optim.SGD(_net().parameters(), lr=0.1, momentum=0.9, dampening=0.5)
    with pytest.raises(ValueError, match="dampening"):
        capturable_optimizer(optimizer, torch.zeros(()))
