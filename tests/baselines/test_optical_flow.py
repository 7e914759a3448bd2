"""Flow estimation and constant-velocity extrapolation on a textured square translating by (+2, +1) px per frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from baselines import batch_flow, copy_last, extrapolate, flow_between, flow_forecast, warp_masks

SIZE, SIDE, VELOCITY = 64, 20, (2, 1)  # velocity (columns, rows) in pixels per frame


def _square_corner(t: int) -> tuple[int, int]:
    """(row, column) of the square's top-left corner at frame t."""
    return 16 + VELOCITY[1] * t, 12 + VELOCITY[0] * t


def _texture(seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).uniform(0, 255, (SIDE, SIDE)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.5)
    return (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 200 + 30


def _grey_clip(num_frames: int, seed: int = 0) -> np.ndarray:
    """(T, H, W) uint8 frames: a textured square on a flat grey background."""
    texture = _texture(seed)
    frames = np.full((num_frames, SIZE, SIZE), 128.0, dtype=np.float32)
    for t in range(num_frames):
        row, column = _square_corner(t)
        frames[t, row : row + SIDE, column : column + SIDE] = texture
    return frames.round().astype(np.uint8)


def _square_labels(t: int, label: int = 3) -> torch.Tensor:
    """(H, W) int64 label map: ``label`` on the square at frame t, 0 elsewhere, 7 on a static stripe at the bottom."""
    labels = torch.zeros(SIZE, SIZE, dtype=torch.int64)
    row, column = _square_corner(t)
    labels[row : row + SIDE, column : column + SIDE] = label
    labels[-4:] = 7
    return labels


def _rgb_clips(num_frames: int) -> torch.Tensor:
    """(2, T, 3, H, W) clips in [-1, 1] from two textures."""
    clips = [torch.from_numpy(_grey_clip(num_frames, seed)).float() / 127.5 - 1 for seed in (0, 1)]
    return torch.stack(clips)[:, :, None].repeat(1, 1, 3, 1, 1)


def _square_interior(t: int, margin: int = 4) -> tuple[slice, slice]:
    row, column = _square_corner(t)
    return slice(row + margin, row + SIDE - margin), slice(column + margin, column + SIDE - margin)


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_flow_recovers_the_backward_motion_inside_the_square(method: str) -> None:
    frames = _grey_clip(3)
    flow = flow_between(frames[1], frames[2], method=method)
    assert flow.shape == (SIZE, SIZE, 2) and flow.dtype == np.float32
    # Backward flow: pixels of the current frame came from (x - 2, y - 1) in the previous one.
    inside = flow[_square_interior(2)]
    np.testing.assert_allclose(inside.reshape(-1, 2).mean(axis=0), [-2.0, -1.0], atol=0.1)
    assert np.abs(inside - np.array([-2.0, -1.0])).max() < 0.3


def test_flow_accepts_rgb_uint8_frames() -> None:
    frames = np.repeat(_grey_clip(2)[..., None], 3, axis=-1)
    np.testing.assert_allclose(flow_between(frames[0], frames[1]), flow_between(frames[0, ..., 0], frames[1, ..., 0]))


def test_batch_flow_shapes() -> None:
    clips = _rgb_clips(2)
    flows = batch_flow(clips[:, 0], clips[:, 1])
    assert flows.shape == (2, SIZE, SIZE, 2) and flows.dtype == torch.float32
    torch.testing.assert_close(flows[0, 30, 30], torch.tensor([-2.0, -1.0]), atol=0.1, rtol=0)


def test_extrapolation_beats_copy_last_on_the_next_frame() -> None:
    clips = _rgb_clips(4)
    observed, future = clips[:, :3], clips[:, 3]
    flow = batch_flow(observed[:, -2], observed[:, -1])
    extrapolated = extrapolate(observed[:, -1], flow)
    assert extrapolated.shape == future.shape and extrapolated.dtype == future.dtype
    flow_error = (extrapolated - future).square().mean()
    copy_error = (copy_last(observed) - future).square().mean()
    assert flow_error < 0.05 * copy_error


def test_flow_forecast_directly_warps_each_step() -> None:
    clips = _rgb_clips(6)
    observed, future = clips[:, :3], clips[:, 3:]
    forecast = flow_forecast(observed, steps=3)
    assert forecast.shape == (2, 3, 3, SIZE, SIZE) and forecast.dtype == torch.float32
    flow = batch_flow(observed[:, -2], observed[:, -1])
    for step in range(3):
        torch.testing.assert_close(forecast[:, step], extrapolate(observed[:, -1], flow, steps=step + 1))
        flow_error = (forecast[:, step] - future[:, step]).square().mean()
        assert flow_error < 0.1 * (observed[:, -1] - future[:, step]).square().mean()


def test_constant_flow_is_an_exact_shift_with_replicated_borders() -> None:
    values = torch.arange(2 * 3 * 6 * 7, dtype=torch.float64).reshape(2, 3, 6, 7)
    flow = torch.tensor([-2.0, -1.0]).expand(2, 6, 7, 2)
    rows = (torch.arange(6) - 2).clamp(min=0)  # two steps of velocity (+2, +1): source (x - 4, y - 2)
    columns = (torch.arange(7) - 4).clamp(min=0)
    expected = values[:, :, rows][:, :, :, columns]
    for interpolation in ("linear", "nearest"):
        warped = extrapolate(values, flow, steps=2, interpolation=interpolation)
        torch.testing.assert_close(warped, expected)


def test_zero_flow_is_the_identity_for_every_kind_of_map() -> None:
    flow = torch.zeros(2, 5, 6, 2)
    scores = torch.rand(2, 19, 5, 6)
    labels = torch.randint(0, 19, (2, 5, 6))
    masks = labels > 9
    torch.testing.assert_close(extrapolate(scores, flow), scores)
    assert torch.equal(extrapolate(labels, flow, interpolation="nearest"), labels)
    assert torch.equal(extrapolate(masks, flow), masks)
    assert torch.equal(extrapolate(masks, flow, interpolation="nearest"), masks)


def test_nearest_label_extrapolation_keeps_labels_and_follows_the_square() -> None:
    frames = _grey_clip(4)
    flow = torch.from_numpy(flow_between(frames[1], frames[2]))[None]
    labels = _square_labels(2)[None]
    warped = extrapolate(labels, flow, interpolation="nearest")
    assert warped.dtype == torch.int64 and warped.shape == labels.shape
    assert set(warped.unique().tolist()) <= {0, 3, 7}
    expected = _square_labels(3)[None]
    square, expected_square = warped == 3, expected == 3
    intersection_over_union = (square & expected_square).sum() / (square | expected_square).sum()
    assert intersection_over_union > 0.9
    assert intersection_over_union > ((labels == 3) & expected_square).sum() / ((labels == 3) | expected_square).sum()
    assert torch.equal(warped[0, -4:], expected[0, -4:])


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_boolean_masks_stay_boolean(interpolation: str) -> None:
    frames = _grey_clip(4)
    flow = torch.from_numpy(flow_between(frames[1], frames[2]))[None]
    mask = _square_labels(2)[None] == 3
    warped = extrapolate(mask, flow, interpolation=interpolation)
    assert warped.dtype == torch.bool and warped.shape == mask.shape
    expected = _square_labels(3)[None] == 3
    assert (warped & expected).sum() / (warped | expected).sum() > 0.9


def test_instance_masks_move_by_steps_times_the_velocity() -> None:
    masks = torch.zeros(2, 8, 10, dtype=torch.bool)
    masks[0, 2:4, 1:3] = True
    masks[1, 5:7, 6:8] = True
    flow = torch.zeros(8, 10, 2)
    flow[..., 0] = -1.0  # everything moves one column right per frame
    warped = warp_masks(masks, flow, steps=2)
    assert warped.dtype == torch.bool and warped.shape == masks.shape
    expected = torch.zeros_like(masks)
    expected[0, 2:4, 3:5] = True
    expected[1, 5:7, 8:10] = True
    assert torch.equal(warped, expected)
    assert warp_masks(torch.zeros(0, 8, 10, dtype=torch.bool), flow, steps=2).shape == (0, 8, 10)


def test_score_maps_are_warped_per_class() -> None:
    frames = _grey_clip(4)
    flow = torch.from_numpy(flow_between(frames[1], frames[2]))[None]
    scores = torch.nn.functional.one_hot(_square_labels(2), num_classes=8).permute(2, 0, 1)[None].double()
    warped = extrapolate(scores, flow)
    assert warped.shape == (1, 8, SIZE, SIZE) and warped.dtype == torch.float64
    torch.testing.assert_close(warped.sum(dim=1), torch.ones(1, SIZE, SIZE, dtype=torch.float64))
    interior = _square_interior(3)
    assert (warped[0, 3][interior] > 0.99).all()


def test_invalid_inputs_raise() -> None:
    flow = torch.zeros(1, 5, 6, 2)
    with pytest.raises(ValueError, match="nearest"):
        extrapolate(torch.zeros(1, 5, 6, dtype=torch.int64), flow)
    with pytest.raises(ValueError, match="flow of shape"):
        extrapolate(torch.zeros(1, 3, 5, 7), flow)
    with pytest.raises(ValueError, match="interpolation"):
        extrapolate(torch.zeros(1, 3, 5, 6), flow, interpolation="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        flow_between(np.zeros((5, 6), dtype=np.float32), np.zeros((5, 6), dtype=np.float32))
    blank = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="method"):
        flow_between(blank, blank, method="tvl1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="T >= 2"):
        flow_forecast(torch.zeros(1, 1, 3, 8, 8), steps=1)
