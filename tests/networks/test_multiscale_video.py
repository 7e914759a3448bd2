from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from networks.multiscale_video import (
    PAPER_DISCRIMINATOR_FEATURE_MAPS,
    PAPER_GENERATOR_FEATURE_MAPS,
    MultiscaleFrameDiscriminator,
    MultiscaleFrameGenerator,
    pyramid,
    stack_frames,
    upsample,
)

SMALL_GENERATOR_FEATURE_MAPS = tuple(tuple(width // 16 for width in scale) for scale in PAPER_GENERATOR_FEATURE_MAPS)
SMALL_DISCRIMINATOR_FEATURE_MAPS = tuple(
    tuple(width // 16 for width in scale) for scale in PAPER_DISCRIMINATOR_FEATURE_MAPS
)
SMALL_DISCRIMINATOR_HIDDEN_UNITS = ((32, 16), (64, 32), (64, 32), (64, 32))


def _parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _small_generator(num_scales: int = 4) -> MultiscaleFrameGenerator:
    return MultiscaleFrameGenerator(num_scales=num_scales, feature_maps=SMALL_GENERATOR_FEATURE_MAPS)


def _small_discriminator(num_scales: int = 4, patch_size: int = 32) -> MultiscaleFrameDiscriminator:
    return MultiscaleFrameDiscriminator(
        patch_size=patch_size,
        num_scales=num_scales,
        feature_maps=SMALL_DISCRIMINATOR_FEATURE_MAPS,
        hidden_units=SMALL_DISCRIMINATOR_HIDDEN_UNITS,
    )


def _assert_every_parameter_has_gradient(module: nn.Module) -> None:
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, f"{name} received no gradient"
        assert parameter.grad.abs().sum() > 0, f"{name} received a zero gradient"


def test_paper_parameter_counts() -> None:
    assert _parameter_count(MultiscaleFrameGenerator()) == 12_569_740
    discriminator = MultiscaleFrameDiscriminator()
    assert _parameter_count(discriminator) == 17_003_140
    assert [(scale.conv_output_size, scale.pooled_size) for scale in discriminator.scales] == [
        (2, 1),
        (2, 1),
        (4, 2),
        (12, 6),
    ]


@pytest.mark.parametrize(("height", "width"), [(32, 32), (240, 320)])
def test_generator_output_shapes(height: int, width: int) -> None:
    generator = _small_generator()
    with torch.no_grad():
        predictions = generator(torch.rand(1, 4, 3, height, width) * 2 - 1)
    assert [tuple(prediction.shape) for prediction in predictions] == [
        (1, 3, height // 8, width // 8),
        (1, 3, height // 4, width // 4),
        (1, 3, height // 2, width // 2),
        (1, 3, height, width),
    ]
    assert all(prediction.abs().max() < 1 for prediction in predictions)


def test_stacked_and_frame_inputs_agree() -> None:
    generator = _small_generator()
    frames = torch.randn(2, 4, 3, 16, 24)
    stacked = torch.cat([frames[:, index] for index in range(4)], dim=1)
    assert torch.equal(stack_frames(frames, 4, 3), stacked)
    with torch.no_grad():
        torch.testing.assert_close(generator.predict(frames), generator.predict(stacked))
        assert torch.equal(generator.predict(frames), generator(frames)[-1])


def test_residual_structure_with_zeroed_residuals() -> None:
    generator = _small_generator()
    with torch.no_grad():
        for scale in generator.scales[1:]:
            scale.to_frame.weight.zero_()
            scale.to_frame.bias.zero_()
        predictions = generator(torch.randn(2, 4, 3, 32, 32))
    assert predictions[0].abs().max() > 0
    expected = predictions[0]
    for prediction in predictions[1:]:
        expected = torch.tanh(upsample(expected))
        torch.testing.assert_close(prediction, expected)


def test_coarsest_scale_sees_only_the_input_frames() -> None:
    generator = _small_generator()
    assert [scale.features[0].in_channels for scale in generator.scales] == [12, 15, 15, 15]


@pytest.mark.parametrize("num_scales", [1, 2, 3])
def test_fewer_scales_use_the_finest_architectures(num_scales: int) -> None:
    generator = _small_generator(num_scales)
    full = _small_generator()
    assert len(generator.scales) == num_scales
    assert generator.scales[0].features[0].in_channels == 12
    for scale, full_scale in zip(generator.scales, full.scales[4 - num_scales :]):
        convs = [module for module in scale.modules() if isinstance(module, nn.Conv2d)]
        full_convs = [module for module in full_scale.modules() if isinstance(module, nn.Conv2d)]
        assert [(conv.out_channels, conv.kernel_size) for conv in convs] == [
            (conv.out_channels, conv.kernel_size) for conv in full_convs
        ]
    with torch.no_grad():
        predictions = generator(torch.randn(2, 4, 3, 32, 32))
    sizes = [32 // 2 ** (num_scales - 1 - index) for index in range(num_scales)]
    assert [tuple(prediction.shape) for prediction in predictions] == [(2, 3, size, size) for size in sizes]


def test_every_generator_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    generator = _small_generator()
    sum(prediction.sum() for prediction in generator(torch.randn(4, 4, 3, 32, 32))).backward()
    _assert_every_parameter_has_gradient(generator)


def test_pyramid_average_pools() -> None:
    frames = torch.randn(2, 4, 3, 16, 8)
    levels = pyramid(frames, 3)
    assert [tuple(level.shape) for level in levels] == [(2, 4, 3, 4, 2), (2, 4, 3, 8, 4), (2, 4, 3, 16, 8)]
    assert levels[-1] is frames
    torch.testing.assert_close(levels[0][1, 2, 0, 3, 1], frames[1, 2, 0, 12:16, 4:8].mean())
    torch.testing.assert_close(levels[0], F.avg_pool2d(levels[1].flatten(0, 1), 2).unflatten(0, (2, 4)))


@pytest.mark.parametrize("num_scales", [1, 4])
def test_discriminator_logit_shapes_and_gradients(num_scales: int) -> None:
    torch.manual_seed(0)
    generator = _small_generator(num_scales)
    discriminator = _small_discriminator(num_scales)
    frames = torch.rand(8, 4, 3, 32, 32) * 2 - 1
    predictions = generator(frames)
    logits = discriminator(pyramid(frames, num_scales), predictions)
    assert [tuple(scale_logits.shape) for scale_logits in logits] == [(8,)] * num_scales
    sum(scale_logits.sum() for scale_logits in logits).backward()
    _assert_every_parameter_has_gradient(discriminator)


def test_discriminator_pools_full_resolution_inputs_itself() -> None:
    discriminator = _small_discriminator()
    frames = torch.randn(3, 4, 3, 32, 32)
    next_frames = pyramid(torch.randn(3, 3, 32, 32), 4)
    stacked_pyramid = [stack_frames(level, 4, 3) for level in pyramid(frames, 4)]
    with torch.no_grad():
        expected = discriminator(stacked_pyramid, next_frames)
        for inputs in (frames, stack_frames(frames, 4, 3), pyramid(frames, 4)):
            for scale_logits, expected_logits in zip(discriminator(inputs, next_frames), expected):
                torch.testing.assert_close(scale_logits, expected_logits)


@pytest.mark.parametrize(("height", "width"), [(30, 32), (32, 36), (20, 20)])
def test_sizes_not_divisible_are_rejected(height: int, width: int) -> None:
    with pytest.raises(ValueError, match="divisible by 2\\*\\*\\(num_scales - 1\\) = 8"):
        _small_generator()(torch.randn(1, 4, 3, height, width))
    with pytest.raises(ValueError, match="divisible"):
        pyramid(torch.randn(1, 3, height, width), 4)


def test_invalid_configurations_are_rejected() -> None:
    with pytest.raises(ValueError, match="num_scales"):
        MultiscaleFrameGenerator(num_scales=5)
    with pytest.raises(ValueError, match="num_scales"):
        MultiscaleFrameGenerator(num_scales=0)
    with pytest.raises(ValueError, match="odd"):
        MultiscaleFrameGenerator(num_scales=1, feature_maps=((8,),), kernel_sizes=((4, 3),))
    with pytest.raises(ValueError, match="one kernel per feature map"):
        MultiscaleFrameGenerator(num_scales=1, feature_maps=((8,),), kernel_sizes=((3,),))
    with pytest.raises(ValueError, match="patch_size"):
        MultiscaleFrameDiscriminator(patch_size=20)
    with pytest.raises(ValueError, match="at least 2x2"):
        MultiscaleFrameDiscriminator(patch_size=16)


def test_invalid_inputs_are_rejected() -> None:
    generator = _small_generator()
    discriminator = _small_discriminator()
    with pytest.raises(ValueError, match="input frames of shape"):
        generator(torch.randn(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match="input frames of shape"):
        generator(torch.randn(1, 9, 32, 32))
    frames = torch.randn(2, 4, 3, 32, 32)
    with pytest.raises(ValueError, match="4 scales"):
        discriminator(frames, pyramid(torch.randn(2, 3, 32, 32), 3))
    with pytest.raises(ValueError, match="at this scale"):
        discriminator(pyramid(torch.randn(2, 4, 3, 64, 64), 4), pyramid(torch.randn(2, 3, 64, 64), 4))
