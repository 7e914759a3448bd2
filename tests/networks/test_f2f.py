from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from networks.f2f import (
    F2FNetwork,
    F2FSubnetwork,
    MultiscaleF2FSubnetwork,
    derive_p6,
)
from networks.multiscale_video import stack_frames, upsample

SMALL_WIDTH = 1 / 16


def _parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [layer for layer in module.modules() if isinstance(layer, nn.Conv2d)]


@pytest.fixture(scope="module")
def full_width_network() -> F2FNetwork:
    torch.manual_seed(0)
    return F2FNetwork()


def test_full_width_parameter_counts(full_width_network: F2FNetwork) -> None:
    subnetworks = full_width_network.subnetworks
    assert list(subnetworks) == ["p5", "p4", "p3", "p2"]
    assert all(isinstance(subnetworks[level], F2FSubnetwork) for level in ("p5", "p4", "p3"))
    assert all(_parameter_count(subnetworks[level]) == 10_816_000 for level in ("p5", "p4", "p3"))
    p2 = subnetworks["p2"]
    assert isinstance(p2, MultiscaleF2FSubnetwork)
    assert [_parameter_count(scale) for scale in p2.scales] == [10_816_000, 10_947_072, 10_947_072]
    assert _parameter_count(full_width_network) == 65_158_144


def test_full_width_layers(full_width_network: F2FNetwork) -> None:
    subnetwork = full_width_network.subnetworks["p5"]
    assert [
        (conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.dilation[0], conv.padding[0])
        for conv in _convs(subnetwork)
    ] == [
        (1024, 512, 1, 1, 0),
        (512, 512, 3, 2, 2),
        (512, 512, 3, 2, 2),
        (512, 256, 3, 4, 4),
        (256, 256, 3, 4, 4),
        (256, 256, 3, 2, 2),
        (256, 256, 7, 1, 3),
    ]
    assert subnetwork.receptive_field == 35
    assert [scale.hidden_layers[0].in_channels for scale in full_width_network.subnetworks["p2"].scales] == [
        1024,
        1280,
        1280,
    ]


def test_weights_are_he_normal_and_biases_zero(full_width_network: F2FNetwork) -> None:
    convs = _convs(full_width_network.subnetworks["p5"])
    for conv in (convs[0], convs[3], convs[-1]):
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
        assert abs(conv.weight.mean().item()) < 0.01 * math.sqrt(2 / fan_in)
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))


def test_width_multiplier_scales_hidden_widths_only() -> None:
    subnetwork = F2FSubnetwork(width_multiplier=SMALL_WIDTH)
    assert [(conv.in_channels, conv.out_channels) for conv in _convs(subnetwork)] == [
        (1024, 32),
        (32, 32),
        (32, 32),
        (32, 16),
        (16, 16),
        (16, 16),
        (16, 256),
    ]
    features = torch.randn(2, 4, 256, 6, 10)
    with torch.no_grad():
        forecast = subnetwork(features)
        torch.testing.assert_close(subnetwork(stack_frames(features, 4, 256)), forecast)
    assert forecast.shape == (2, 256, 6, 10)


def test_receptive_field() -> None:
    subnetwork = F2FSubnetwork(in_frames=1, channels=1, width_multiplier=SMALL_WIDTH)
    with torch.no_grad():
        for parameter in subnetwork.parameters():
            parameter.fill_(0.01)
    features = torch.rand(1, 1, 1, 37, 37, requires_grad=True)
    subnetwork(features)[0, 0, 18, 18].backward()
    rows, columns = features.grad[0, 0, 0].nonzero(as_tuple=True)
    assert (rows.min().item(), rows.max().item(), columns.min().item(), columns.max().item()) == (1, 35, 1, 35)


def test_multiscale_shapes_and_residual_structure() -> None:
    torch.manual_seed(0)
    p2 = MultiscaleF2FSubnetwork(width_multiplier=SMALL_WIDTH)
    features = torch.randn(1, 4, 256, 8, 12)
    with torch.no_grad():
        for scale in p2.scales[1:]:
            scale.to_features.weight.zero_()
            scale.to_features.bias.zero_()
        predictions = p2(features)
        coarse_inputs = F.avg_pool2d(stack_frames(features, 4, 256), 4)
        torch.testing.assert_close(predictions[0], p2.scales[0](coarse_inputs))
        assert torch.equal(p2.predict(features), predictions[-1])
    assert [tuple(prediction.shape) for prediction in predictions] == [
        (1, 256, 2, 3),
        (1, 256, 4, 6),
        (1, 256, 8, 12),
    ]
    assert predictions[0].abs().max() > 0
    torch.testing.assert_close(predictions[1], upsample(predictions[0]))
    torch.testing.assert_close(predictions[2], upsample(predictions[1]))


def test_network_forward_and_gradients() -> None:
    torch.manual_seed(0)
    network = F2FNetwork(width_multiplier=SMALL_WIDTH)
    sizes = {"p5": (1, 2), "p4": (2, 4), "p3": (4, 8), "p2": (8, 16)}
    features = {level: torch.randn(1, 4, 256, *size) for level, size in sizes.items()}
    forecasts = network(features)
    assert {
        level: [tuple(forecast.shape) for forecast in level_forecasts] for level, level_forecasts in forecasts.items()
    } == {
        "p5": [(1, 256, 1, 2)],
        "p4": [(1, 256, 2, 4)],
        "p3": [(1, 256, 4, 8)],
        "p2": [(1, 256, 2, 4), (1, 256, 4, 8), (1, 256, 8, 16)],
    }
    sum(forecast.square().mean() for level_forecasts in forecasts.values() for forecast in level_forecasts).backward()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"{name} received no gradient"
    with torch.no_grad():
        assert list(network({"p5": features["p5"]}, levels=["p5"])) == ["p5"]


def test_single_scale_p2() -> None:
    network = F2FNetwork(levels=("p2",), p2_scales=1, width_multiplier=SMALL_WIDTH)
    assert isinstance(network.subnetworks["p2"], F2FSubnetwork)
    with torch.no_grad():
        forecasts = network({"p2": torch.randn(1, 4 * 256, 6, 6)})
    assert [tuple(forecast.shape) for forecast in forecasts["p2"]] == [(1, 256, 6, 6)]


@pytest.mark.parametrize(("height", "width"), [(4, 8), (5, 7), (1, 1)])
def test_derive_p6_subsamples_p5(height: int, width: int) -> None:
    p5 = torch.randn(2, 256, height, width)
    p6 = F2FNetwork.derive_p6(p5)
    assert p6.shape == (2, 256, math.ceil(height / 2), math.ceil(width / 2))
    assert torch.equal(p6, p5[:, :, ::2, ::2])
    assert torch.equal(derive_p6(p5), p6)


def test_initialise_from_copies_weights() -> None:
    network = F2FNetwork(width_multiplier=SMALL_WIDTH)
    network.initialise_from("p5", "p4")
    p5_state = network.subnetworks["p5"].state_dict()
    for name, tensor in network.subnetworks["p4"].state_dict().items():
        assert torch.equal(tensor, p5_state[name])
        assert tensor.data_ptr() != p5_state[name].data_ptr()
    assert not torch.equal(network.subnetworks["p3"].to_features.weight, network.subnetworks["p5"].to_features.weight)
    with pytest.raises(ValueError, match="differ in architecture"):
        network.initialise_from("p5", "p2")
    with pytest.raises(ValueError, match="no subnetwork"):
        network.initialise_from("p6", "p4")


def test_invalid_arguments_are_rejected() -> None:
    network = F2FNetwork(levels=("p5",), width_multiplier=SMALL_WIDTH)
    with pytest.raises(ValueError, match="without a subnetwork"):
        network({"p5": torch.randn(1, 4, 256, 2, 2)}, levels=["p4"])
    with pytest.raises(ValueError, match="without features"):
        network({})
    with pytest.raises(ValueError, match="input frames of shape"):
        network({"p5": torch.randn(1, 3, 256, 2, 2)})
    with pytest.raises(ValueError, match="divisible"):
        MultiscaleF2FSubnetwork(width_multiplier=SMALL_WIDTH)(torch.randn(1, 4, 256, 6, 8))
    with pytest.raises(ValueError, match="distinct"):
        F2FNetwork(levels=("p5", "p5"))
    with pytest.raises(ValueError, match="p2_scales"):
        F2FNetwork(p2_scales=0)
    with pytest.raises(ValueError, match="width_multiplier"):
        F2FSubnetwork(width_multiplier=-1)
