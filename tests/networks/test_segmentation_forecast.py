from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from networks.multiscale_video import pyramid, stack_frames, upsample
from networks.segmentation_forecast import (
    FORECAST_MODALITIES,
    DilatedSegmentationForecaster,
    MultiscaleSegmentationForecaster,
    ResidualForecaster,
    make_segmentation_forecaster,
    scale_widths,
)

SMALL_WIDTH = 1 / 16
ARCHITECTURES = ("multiscale", "dilated")


def _parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _small_forecaster(
    architecture: str, modality: str = "S2S"
) -> MultiscaleSegmentationForecaster | DilatedSegmentationForecaster:
    in_channels, out_channels = FORECAST_MODALITIES[modality]
    return make_segmentation_forecaster(architecture, in_channels, out_channels, width_multiplier=SMALL_WIDTH)


def test_paper_width_parameter_counts() -> None:
    assert _parameter_count(MultiscaleSegmentationForecaster()) == 1_654_950
    assert _parameter_count(DilatedSegmentationForecaster()) == 1_437_459
    multiscale = MultiscaleSegmentationForecaster()
    assert [multiscale.coarse.features[0].in_channels, multiscale.fine.features[0].in_channels] == [76, 95]


def test_width_multiplier_scales_hidden_widths_only() -> None:
    assert scale_widths((128, 256, 128), SMALL_WIDTH) == (8, 16, 8)
    assert scale_widths((128, 256), 1e-4) == (1, 1)
    forecaster = DilatedSegmentationForecaster(width_multiplier=SMALL_WIDTH)
    convs = [module for module in forecaster.modules() if isinstance(module, nn.Conv2d)]
    assert [(conv.in_channels, conv.out_channels, conv.dilation[0]) for conv in convs] == [
        (76, 8, 1),
        (8, 8, 2),
        (8, 16, 4),
        (16, 16, 8),
        (16, 8, 16),
        (8, 19, 1),
    ]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("modality", ["S2S", "X2X", "XS2XS"])
@pytest.mark.parametrize(("height", "width"), [(64, 64), (128, 256)])
def test_output_shapes(architecture: str, modality: str, height: int, width: int) -> None:
    in_channels, out_channels = FORECAST_MODALITIES[modality]
    forecaster = _small_forecaster(architecture, modality)
    with torch.no_grad():
        predictions = forecaster(torch.randn(1, 4, in_channels, height, width))
    expected = [(1, out_channels, height, width)]
    if architecture == "multiscale":
        expected.insert(0, (1, out_channels, height // 2, width // 2))
    assert [tuple(prediction.shape) for prediction in predictions] == expected


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_stacked_and_frame_inputs_agree(architecture: str) -> None:
    forecaster = _small_forecaster(architecture, "XS2XS")
    frames = torch.randn(2, 4, 22, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(forecaster.predict(frames), forecaster.predict(stack_frames(frames, 4, 22)))
        assert torch.equal(forecaster.predict(frames), forecaster(frames)[-1])


def test_multiscale_coarse_scale_sees_pooled_inputs_and_fine_scale_is_residual() -> None:
    forecaster = _small_forecaster("multiscale")
    frames = torch.randn(2, 4, 19, 32, 48)
    with torch.no_grad():
        forecaster.fine.to_frame.weight.zero_()
        forecaster.fine.to_frame.bias.zero_()
        coarse, fine = forecaster(frames)
        torch.testing.assert_close(coarse, forecaster.coarse(F.avg_pool2d(stack_frames(frames, 4, 19), 2)))
    assert coarse.abs().max() > 0
    torch.testing.assert_close(fine, upsample(coarse))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_parameter_gets_a_gradient(architecture: str) -> None:
    torch.manual_seed(0)
    forecaster = _small_forecaster(architecture)
    sum(prediction.square().mean() for prediction in forecaster(torch.randn(2, 4, 19, 32, 32))).backward()
    for name, parameter in forecaster.named_parameters():
        assert parameter.grad is not None, f"{name} received no gradient"
        assert parameter.grad.abs().sum() > 0, f"{name} received a zero gradient"


def test_dilated_receptive_field() -> None:
    forecaster = DilatedSegmentationForecaster(in_channels_per_frame=1, out_channels=1, width_multiplier=SMALL_WIDTH)
    assert forecaster.receptive_field == 65
    with torch.no_grad():
        for parameter in forecaster.parameters():
            parameter.fill_(0.01)
    frames = torch.rand(1, 4, 1, 81, 81, requires_grad=True)
    forecaster.predict(frames)[0, 0, 40, 40].backward()
    rows, columns = frames.grad[0].abs().sum(dim=(0, 1)).nonzero(as_tuple=True)
    assert (rows.min().item(), rows.max().item(), columns.min().item(), columns.max().item()) == (8, 72, 8, 72)


@pytest.mark.parametrize(("height", "width"), [(63, 64), (64, 63), (31, 33)])
def test_odd_sizes_are_rejected_by_the_multiscale_network_only(height: int, width: int) -> None:
    with pytest.raises(ValueError, match="even height and width"):
        _small_forecaster("multiscale")(torch.randn(1, 4, 19, height, width))
    with torch.no_grad():
        assert _small_forecaster("dilated").predict(torch.randn(1, 4, 19, height, width)).shape[-2:] == (height, width)


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="architecture must be one of"):
        make_segmentation_forecaster("unet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="width_multiplier"):
        MultiscaleSegmentationForecaster(width_multiplier=0)
    with pytest.raises(ValueError, match="must be positive"):
        DilatedSegmentationForecaster(num_input_frames=0)
    with pytest.raises(ValueError, match="input frames of shape"):
        _small_forecaster("multiscale")(torch.randn(1, 4, 3, 32, 32))
    with pytest.raises(ValueError, match="input frames of shape"):
        _small_forecaster("dilated")(torch.randn(1, 3 * 19, 32, 32))


@pytest.mark.parametrize("architecture", ["multiscale", "dilated"])
def test_residual_forecaster_starts_as_copy_last_at_every_scale(architecture: str):
    torch.manual_seed(0)
    network = ResidualForecaster(make_segmentation_forecaster(architecture, 19, 19, 4, 0.125))
    frames = torch.randn(2, 4, 19, 16, 32)
    predictions = network(frames)
    for prediction, pooled in zip(predictions, pyramid(frames[:, -1], len(predictions))):
        torch.testing.assert_close(prediction, pooled)


def test_residual_forecaster_needs_matching_channels():
    with pytest.raises(ValueError, match="as many output as input channels"):
        ResidualForecaster(make_segmentation_forecaster("multiscale", 22, 19, 4, 0.125))
