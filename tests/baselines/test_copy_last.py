from __future__ import annotations

import pytest
import torch

from baselines import copy_last, copy_last_forecast


def test_copy_last_returns_the_last_frame() -> None:
    clips = torch.randn(2, 4, 3, 5, 6)
    last = copy_last(clips)
    assert last.shape == (2, 3, 5, 6) and last.dtype == clips.dtype
    torch.testing.assert_close(last, clips[:, 3])


def test_copy_last_label_maps_keep_their_dtype() -> None:
    labels = torch.randint(0, 19, (2, 3, 5, 6))
    last = copy_last(labels)
    assert last.shape == (2, 5, 6) and last.dtype == torch.int64
    assert torch.equal(last, labels[:, -1])
    masks = labels > 9
    assert torch.equal(copy_last(masks), masks[:, -1])


def test_copy_last_is_a_copy() -> None:
    clips = torch.zeros(1, 2, 3, 4, 4)
    copy_last(clips).fill_(1.0)
    assert clips.abs().sum() == 0


def test_copy_last_forecast_repeats_the_last_frame() -> None:
    clips = torch.randn(2, 4, 3, 5, 6)
    forecast = copy_last_forecast(clips, steps=3)
    assert forecast.shape == (2, 3, 3, 5, 6)
    for step in range(3):
        torch.testing.assert_close(forecast[:, step], clips[:, -1])
    assert copy_last_forecast(torch.randint(0, 5, (2, 3, 5, 6)), steps=2).shape == (2, 2, 5, 6)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="T >= 1"):
        copy_last(torch.zeros(2, 0, 3, 4, 4))
    with pytest.raises(ValueError, match="B, T"):
        copy_last(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="positive"):
        copy_last_forecast(torch.zeros(2, 3, 4, 4), steps=0)
