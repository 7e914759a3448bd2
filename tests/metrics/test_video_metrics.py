"""Frame PSNR, SSIM and sharpness difference against scikit-image and numpy, on full frames and moving areas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from metrics.video import (
    FramePSNR,
    FrameSSIM,
    SharpnessDifference,
    frame_sharpness_difference,
    moving_area_mask,
    ssim_map,
    unit_range,
)

LUMA = np.array([0.299, 0.587, 0.114])
SSIM_OPTIONS = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 1.0}


def _frames(seed: int, batch: int = 3, height: int = 24, width: int = 28, noise: float = 0.1) -> tuple[np.ndarray, ...]:
    """Targets and noisy predictions (B, 3, H, W) in [0, 1], float64, and masks (B, H, W) true on a random square."""
    rng = np.random.default_rng(seed)
    target = rng.uniform(size=(batch, 3, height, width))
    pred = np.clip(target + rng.normal(scale=noise, size=target.shape), 0, 1)
    mask = np.zeros((batch, height, width), dtype=bool)
    side = min(height, width) // 2
    for frame in range(batch):
        row, column = rng.integers(0, height - side), rng.integers(0, width - side)
        mask[frame, row : row + side, column : column + side] = True
    return pred, target, mask


def _model_range(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images * 2 - 1)


def _skimage_ssim(pred: np.ndarray, target: np.ndarray) -> float:
    return structural_similarity(target, pred, channel_axis=0, **SSIM_OPTIONS)


def _numpy_sharpness(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Transcription for one (3, H, W) frame in [0, 1]: 10 log10(1 / mean |(d_i Y + d_j Y) - (d_i P + d_j P)|)."""
    grey_target, grey_pred = np.tensordot(LUMA, target, axes=1), np.tensordot(LUMA, pred, axes=1)
    height, width = grey_target.shape
    differences = []
    for i in range(1, height):
        for j in range(1, width):
            if mask is not None and not mask[i, j]:
                continue
            y, p = grey_target, grey_pred
            sharp_target = abs(y[i, j] - y[i - 1, j]) + abs(y[i, j] - y[i, j - 1])
            sharp_pred = abs(p[i, j] - p[i - 1, j]) + abs(p[i, j] - p[i, j - 1])
            differences.append(abs(sharp_target - sharp_pred))
    return 10 * math.log10(1 / np.mean(differences))


def _numpy_restricted_psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """10 log10(1 / MSE) with the MSE over the three channels of the masked pixels of one (3, H, W) frame."""
    return float(10 * np.log10(1 / ((pred - target) ** 2)[:, mask].mean()))


def _official(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Static pixels set to 0 in [0, 1], i.e. -1 in the model's range."""
    return np.where(mask[:, None], images, 0.0)


def test_psnr_matches_skimage() -> None:
    pred, target, _ = _frames(0)
    metric = FramePSNR()
    metric.update(_model_range(pred[:2]), _model_range(target[:2]))
    metric.update(_model_range(pred[2:]), _model_range(target[2:]))
    expected = np.mean([peak_signal_noise_ratio(t, p, data_range=1) for p, t in zip(pred, target)])
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)
    assert int(metric.frame_count) == 3 and int(metric.skipped_count) == 0


def test_psnr_of_luma_matches_skimage_on_grey_frames() -> None:
    pred, target, _ = _frames(1)
    metric = FramePSNR(channels="y")
    metric.update(_model_range(pred), _model_range(target))
    grey = [(np.tensordot(LUMA, p, axes=1), np.tensordot(LUMA, t, axes=1)) for p, t in zip(pred, target)]
    expected = np.mean([peak_signal_noise_ratio(t, p, data_range=1) for p, t in grey])
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)


def test_ssim_matches_skimage_mean() -> None:
    # skimage averages its map over the image cropped by (11 - 1) / 2 = 5 pixels, where no padding is involved;
    # the valid-window map is exactly that region, so the two agree to round-off (float64, tolerance 1e-10).
    pred, target, _ = _frames(2)
    metric = FrameSSIM()
    metric.update(_model_range(pred), _model_range(target))
    expected = np.mean([_skimage_ssim(p, t) for p, t in zip(pred, target)])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-10)


def test_ssim_map_is_skimage_full_map_without_its_border() -> None:
    pred, target, _ = _frames(3, batch=1)
    _, full_map = structural_similarity(target[0], pred[0], channel_axis=0, full=True, **SSIM_OPTIONS)
    ours = ssim_map(unit_range(_model_range(pred)), unit_range(_model_range(target)))
    assert ours.shape == (1, 3, 24 - 10, 28 - 10)
    np.testing.assert_allclose(ours[0].numpy(), full_map[:, 5:-5, 5:-5], atol=1e-12)


def test_ssim_of_luma_matches_skimage_on_grey_frames() -> None:
    pred, target, _ = _frames(4)
    metric = FrameSSIM(channels="y")
    metric.update(_model_range(pred), _model_range(target))
    grey = [(np.tensordot(LUMA, p, axes=1), np.tensordot(LUMA, t, axes=1)) for p, t in zip(pred, target)]
    expected = np.mean([structural_similarity(t, p, **SSIM_OPTIONS) for p, t in grey])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-10)


def test_sharpness_hand_worked() -> None:
    # Grey target Y = [[0, 0, 0], [0, 0.5, 0], [0, 0, 0]] (equal RGB channels), constant prediction (no gradients).
    # Over i, j in {1, 2}: d_i Y = |Y_ij - Y_(i-1)j| = [[0.5, 0], [0.5, 0]], d_j Y = |Y_ij - Y_i(j-1)| = [[0.5, 0.5],
    # [0, 0]], so d_i Y + d_j Y = [[1, 0.5], [0.5, 0]] with mean 0.5: 10 log10(1 / 0.5) = 3.0103 dB.
    target_grey = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    target = (target_grey * 2 - 1).expand(1, 3, 3, 3)
    pred = torch.full((1, 3, 3, 3), -0.5, dtype=torch.float64)
    assert frame_sharpness_difference(pred, target).item() == pytest.approx(10 * math.log10(2), rel=1e-9)
    # Restricted to pixel (1, 1): |1 - 0| -> 0 dB; to (2, 2): no difference -> +inf; to (0, 0): nothing to average.
    for row, column, expected in [(1, 1, 0.0), (2, 2, math.inf)]:
        mask = torch.zeros(1, 3, 3, dtype=torch.bool)
        mask[0, row, column] = True
        assert frame_sharpness_difference(pred, target, mask).item() == pytest.approx(expected, abs=1e-9)
    corner = torch.zeros(1, 3, 3, dtype=torch.bool)
    corner[0, 0, 0] = True
    assert math.isnan(frame_sharpness_difference(pred, target, corner).item())


def test_sharpness_matches_numpy_transcription() -> None:
    pred, target, mask = _frames(5, height=9, width=11, noise=0.2)
    metric = SharpnessDifference()
    metric.update(_model_range(pred), _model_range(target))
    expected = np.mean([_numpy_sharpness(p, t) for p, t in zip(pred, target)])
    assert metric.compute().item() == pytest.approx(expected, rel=1e-9)
    restricted = SharpnessDifference()
    restricted.update(_model_range(pred), _model_range(target), torch.from_numpy(mask))
    expected_restricted = np.mean([_numpy_sharpness(p, t, m) for p, t, m in zip(pred, target, mask)])
    assert restricted.compute().item() == pytest.approx(expected_restricted, rel=1e-9)


def test_restricted_psnr_and_ssim_match_numpy() -> None:
    pred, target, mask = _frames(6)
    psnr, ssim = FramePSNR(), FrameSSIM()
    for metric in (psnr, ssim):
        metric.update(_model_range(pred), _model_range(target), torch.from_numpy(mask))
    expected_psnr = np.mean([_numpy_restricted_psnr(p, t, m) for p, t, m in zip(pred, target, mask)])
    assert psnr.compute().item() == pytest.approx(expected_psnr, rel=1e-12)
    expected_ssim = []
    for p, t, m in zip(pred, target, mask):
        _, full_map = structural_similarity(t, p, channel_axis=0, full=True, **SSIM_OPTIONS)
        expected_ssim.append(full_map.mean(axis=0)[5:-5, 5:-5][m[5:-5, 5:-5]].mean())
    assert ssim.compute().item() == pytest.approx(np.mean(expected_ssim), abs=1e-10)


def test_full_mask_restriction_equals_full_frame() -> None:
    pred, target, _ = _frames(7)
    everywhere = torch.ones(3, 24, 28, dtype=torch.bool)
    for metric_class in (FramePSNR, FrameSSIM, SharpnessDifference):
        for masking in ("restrict", "official"):
            full, masked = metric_class(masking=masking), metric_class(masking=masking)
            full.update(_model_range(pred), _model_range(target))
            masked.update(_model_range(pred), _model_range(target), everywhere)
            assert masked.compute().item() == pytest.approx(full.compute().item(), rel=1e-12)


def test_restrict_skips_frames_with_empty_masks() -> None:
    pred, target, mask = _frames(8)
    mask[1] = False
    metric = FramePSNR()
    metric.update(_model_range(pred), _model_range(target), torch.from_numpy(mask))
    expected = np.mean([_numpy_restricted_psnr(p, t, m) for p, t, m in zip(pred[::2], target[::2], mask[::2])])
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)
    assert int(metric.frame_count) == 2 and int(metric.skipped_count) == 1


def test_official_convention_blacks_out_static_pixels_in_both_frames() -> None:
    pred, target, mask = _frames(9)
    official_pred, official_target = _official(pred, mask), _official(target, mask)
    psnr, ssim, sharpness = (
        FramePSNR(masking="official"),
        FrameSSIM(masking="official"),
        SharpnessDifference(masking="official"),
    )
    for metric in (psnr, ssim, sharpness):
        metric.update(_model_range(pred), _model_range(target), torch.from_numpy(mask))
    pairs = list(zip(official_pred, official_target))
    expected_psnr = np.mean([peak_signal_noise_ratio(t, p, data_range=1) for p, t in pairs])
    assert psnr.compute().item() == pytest.approx(expected_psnr, rel=1e-12)
    assert ssim.compute().item() == pytest.approx(np.mean([_skimage_ssim(p, t) for p, t in pairs]), abs=1e-10)
    assert sharpness.compute().item() == pytest.approx(np.mean([_numpy_sharpness(p, t) for p, t in pairs]), rel=1e-9)
    # Static pixels count as perfect, so the official PSNR is above the restricted one.
    restricted = FramePSNR()
    restricted.update(_model_range(pred), _model_range(target), torch.from_numpy(mask))
    assert psnr.compute() > restricted.compute()


def test_official_convention_skips_frames_at_or_above_50_db() -> None:
    pred, target, mask = _frames(10)
    pred[1] = target[1]  # perfect: +inf dB
    pred[2] = np.clip(target[2] + 1e-3, 0, 1)  # about 60 dB over the moving area, more once blacked out
    psnr, ssim, sharpness = (
        FramePSNR(masking="official"),
        FrameSSIM(masking="official"),
        SharpnessDifference(masking="official"),
    )
    for metric in (psnr, ssim, sharpness):
        metric.update(_model_range(pred), _model_range(target), torch.from_numpy(mask))
        assert int(metric.frame_count) == 1 and int(metric.skipped_count) == 2
    official_pred, official_target = _official(pred[:1], mask[:1]), _official(target[:1], mask[:1])
    expected = peak_signal_noise_ratio(official_target[0], official_pred[0], data_range=1)
    assert psnr.compute().item() == pytest.approx(expected, rel=1e-12)
    assert ssim.compute().item() == pytest.approx(_skimage_ssim(official_pred[0], official_target[0]), abs=1e-10)
    kept_all = FramePSNR(masking="official", skip_psnr_above=math.inf)
    kept_all.update(_model_range(pred), _model_range(target), torch.from_numpy(mask))
    assert int(kept_all.frame_count) == 3 and kept_all.compute().item() == math.inf


def test_skip_threshold_applies_to_restrict_when_given() -> None:
    pred, target, _ = _frames(11)
    values = [peak_signal_noise_ratio(t, p, data_range=1) for p, t in zip(pred, target)]
    threshold = float(np.median(values))
    metric = FramePSNR(skip_psnr_above=threshold)
    metric.update(_model_range(pred), _model_range(target))
    kept = [value for value in values if value < threshold]
    assert metric.compute().item() == pytest.approx(np.mean(kept), rel=1e-12)
    assert int(metric.skipped_count) == len(values) - len(kept)


def test_no_kept_frame_gives_nan() -> None:
    pred, target, _ = _frames(12, batch=1)
    metric = FramePSNR(masking="official")
    metric.update(_model_range(target), _model_range(target), torch.zeros(1, 24, 28, dtype=torch.bool))
    assert math.isnan(metric.compute().item())


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
@pytest.mark.parametrize("metric_class", [FramePSNR, FrameSSIM, SharpnessDifference])
@pytest.mark.parametrize("masking", ["restrict", "official"])
def test_merging_two_ranks_matches_single_pass(metric_class: type, masking: str) -> None:
    pred, target, mask = _frames(13, batch=5)
    pred[1::2] = np.clip(target[1::2] + 1e-3, 0, 1)  # above 50 dB: skipped by the official convention
    pred_t, target_t, mask_t = _model_range(pred), _model_range(target), torch.from_numpy(mask)
    single = metric_class(masking=masking)
    single.update(pred_t, target_t, mask_t)
    ranks = [metric_class(masking=masking), metric_class(masking=masking)]
    ranks[0].update(pred_t[:2], target_t[:2], mask_t[:2])
    ranks[1].update(pred_t[2:], target_t[2:], mask_t[2:])
    merged = metric_class(masking=masking)
    merged.merge_state(ranks[0])
    merged.merge_state(ranks[1])
    assert merged.compute().item() == pytest.approx(single.compute().item(), rel=1e-12)
    assert int(single.frame_count) == (5 if masking == "restrict" else 3)
    assert int(merged.frame_count) == int(single.frame_count)
    assert int(merged.skipped_count) == int(single.skipped_count)


def test_forward_returns_the_batch_value_and_accumulates() -> None:
    pred, target, _ = _frames(14)
    metric = FramePSNR()
    first = metric(_model_range(pred[:1]), _model_range(target[:1]))
    metric(_model_range(pred[1:]), _model_range(target[1:]))
    assert first.item() == pytest.approx(peak_signal_noise_ratio(target[0], pred[0], data_range=1), rel=1e-12)
    expected = np.mean([peak_signal_noise_ratio(t, p, data_range=1) for p, t in zip(pred, target)])
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)


def test_moving_area_mask_finds_a_moving_square() -> None:
    rng = np.random.default_rng(15)
    texture = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 16, 16))).float()
    texture = torch.nn.functional.avg_pool2d(texture, 3, stride=1, padding=1, count_include_pad=False)
    previous, frame = torch.zeros(1, 3, 48, 48), torch.zeros(1, 3, 48, 48)
    previous[..., 10:26, 10:26] = texture
    frame[..., 11:27, 12:28] = texture  # moved by (+2, +1)
    mask = moving_area_mask(previous, frame)
    assert mask.shape == (1, 48, 48) and mask.dtype == torch.bool
    assert mask[0, 15:23, 16:24].all()
    assert not mask[0, 38:, :].any() and not mask[0, :, 40:].any()
    dilated = moving_area_mask(previous, frame, dilation=2)
    assert (dilated >= mask).all() and dilated.sum() > mask.sum()
    assert not moving_area_mask(frame, frame).any()


def test_invalid_inputs_raise() -> None:
    frames = torch.zeros(2, 3, 16, 16)
    with pytest.raises(ValueError, match="bool mask"):
        FramePSNR().update(frames, frames, torch.ones(2, 16, 16))
    with pytest.raises(ValueError, match="bool mask"):
        FramePSNR().update(frames, frames, torch.ones(2, 8, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="same shape|B, 3, H, W"):
        FramePSNR().update(frames, frames[:1])
    with pytest.raises(ValueError, match="masking"):
        FrameSSIM(masking="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 11"):
        FrameSSIM().update(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="channel mode"):
        FramePSNR(channels="lab").update(frames, frames)  # type: ignore[arg-type]
