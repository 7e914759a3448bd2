"""The memory tracker counts live storages exactly, fake and real tensors agree, and ``bench memory`` prints its
table and a fitting change for a configuration over the limit (tiny shapes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from genforecast.bench import memory
from genforecast.bench.cli import main
from genforecast.bench.memory import PeakMemoryTracker, cases, estimate, fake_module


def test_tracker_counts_live_storages_and_their_peak() -> None:
    x = torch.zeros(1000)
    size = x.untyped_storage().nbytes()
    tracker = PeakMemoryTracker()
    tracker.track(x)
    with tracker:
        y = x * 2
        z = y + 1  # x, y and z alive: the peak
        del y
        w = z[:10].mul_(3)  # y is seen freed at the next op; a view written in place adds no storage
        assert tracker.current == 2 * size and tracker.peak == 3 * size
        v = x + 1
        assert tracker.current == 3 * size
        del z, w, v
        x.add_(1)
    assert tracker.current == size and tracker.peak == 3 * size


def _mlp_step(model: nn.Module, batch: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        model(batch).square().mean().backward()
        optimizer.step()


@pytest.mark.parametrize("batch_size", [3, 8])
def test_fake_and_real_tensors_give_the_same_peak(batch_size: int) -> None:
    """Forward, backward (the autograd engine's ops are seen) and SGD with momentum, on real and on fake tensors."""
    peaks = []
    for fake in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 32))
        mode = FakeTensorMode()
        if fake:
            fake_module(model, mode)
        tracker = PeakMemoryTracker()
        tracker.track([*model.parameters()])
        with mode if fake else torch.no_grad():
            batch = torch.empty(batch_size, 64)
        tracker.track(batch)
        with mode if fake else torch.enable_grad(), tracker:
            _mlp_step(model, batch)
        peaks.append(tracker.peak)
    assert peaks[0] == peaks[1]
    parameters = 4 * (64 * 256 + 256 + 256 * 32 + 32)
    assert peaks[0] > 3 * parameters  # weights, gradients and momentum buffers live together


def _joint_case() -> memory.Case:
    return next(case for case in cases() if case.name == "Joint forecaster ar_finetune")


def test_peak_grows_linearly_with_the_batch_and_the_change_keeps_the_effective_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Joint forecaster (3 unrolled steps): peaks at batch 1, 2 and 4 lie on a line; with the limit between the
    peaks at batch 2 and 4, the batch-4 configuration does not fit and its change is batch 2 x 2 accumulated."""
    case = _joint_case()
    peaks = {batch: estimate(case, batch, "32-true").peak_bytes for batch in (1, 2, 4)}
    assert peaks[4] - peaks[2] == pytest.approx(2 * (peaks[2] - peaks[1]), rel=0.02) and peaks[2] > peaks[1]
    monkeypatch.setattr(memory, "FIT_LIMIT_BYTES", (peaks[2] + peaks[4]) / 2)
    full = estimate(case, 4, "32-true")
    change = memory.fitting_batch(case, "32-true", scale=1)
    assert not full.fits and change is not None and change.batch_size == 2 and change.peak_bytes == peaks[2]
    table = memory.format_table([(full, change)])
    assert "| NO |" in table and "batch 2 x 2 accumulated (effective 4)" in table


def test_bench_memory_prints_f2f_at_tiny_scale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              detector_weights: Path, capsys: pytest.CaptureFixture) -> None:
    """F2F P5 end to end (the detector extracting 5 frames in the step) at 64x128 with the tiny test detector."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("F2F_DETECTOR", str(detector_weights))
    assert main(["memory", "--scale", "16", "--precisions", "32-true", "--only", "F2F P5 (end to end)"]) == 0
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith("| configuration")]
    assert len(rows) == 1
    name, setting, batch, precision, parameters, peak, fits = rows[0]
    assert name == "F2F P5 (end to end)" and batch == "4" and precision == "32-true" and fits == "yes"
    assert float(peak.split()[0]) > float(parameters.split()[0]) > 0
