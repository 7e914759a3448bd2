from __future__ import annotations

import pytest
import torch
from torch import nn

from networks.dcgan import DCGANDiscriminator, DCGANGenerator, DiscriminatorOutput, dcgan_channel_schedule


def _parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _assert_every_parameter_has_gradient(module: nn.Module) -> None:
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, f"{name} received no gradient"
        assert parameter.grad.abs().sum() > 0, f"{name} received a zero gradient"


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_generator_output_shape_and_range(resolution: int) -> None:
    generator = DCGANGenerator(latent_dim=16, resolution=resolution, base_channels=8)
    images = generator(torch.randn(2, 16))
    assert images.shape == (2, 3, resolution, resolution)
    assert images.abs().max() <= 1


@pytest.mark.parametrize("resolution", [32, 64, 128])
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_discriminator_output_shapes(resolution: int, norm: str) -> None:
    discriminator = DCGANDiscriminator(resolution=resolution, base_channels=8, num_shapes=7, num_textures=5, norm=norm)
    output = discriminator(torch.rand(3, 3, resolution, resolution) * 2 - 1)
    assert isinstance(output, DiscriminatorOutput)
    assert output.real_fake.shape == (3,)
    assert output.shape_logits.shape == (3, 7)
    assert output.texture_logits.shape == (3, 5)


def test_256_pixel_networks() -> None:
    generator = DCGANGenerator(latent_dim=8, resolution=256, base_channels=2)
    discriminator = DCGANDiscriminator(resolution=256, base_channels=2)
    images = generator(torch.randn(2, 8))
    assert images.shape == (2, 3, 256, 256)
    assert discriminator(images).shape_logits.shape == (2, 7)


def test_default_64_pixel_layout_matches_dcgan() -> None:
    assert dcgan_channel_schedule(64, 64) == [512, 256, 128, 64]
    assert dcgan_channel_schedule(128, 64) == [512, 512, 256, 128, 64]
    assert dcgan_channel_schedule(32, 64) == [256, 128, 64]
    assert _parameter_count(DCGANGenerator()) == 3_576_707
    assert _parameter_count(DCGANDiscriminator()) == 2_880_335


def test_parameter_count_grows_with_resolution() -> None:
    generator_counts = [_parameter_count(DCGANGenerator(resolution=r, base_channels=8)) for r in (32, 64, 128, 256)]
    discriminator_counts = [
        _parameter_count(DCGANDiscriminator(resolution=r, base_channels=8)) for r in (32, 64, 128, 256)
    ]
    assert generator_counts == sorted(set(generator_counts))
    assert discriminator_counts == sorted(set(discriminator_counts))


@pytest.mark.parametrize("resolution", [32, 64])
def test_every_generator_parameter_gets_a_gradient(resolution: int) -> None:
    generator = DCGANGenerator(latent_dim=8, resolution=resolution, base_channels=4)
    generator(torch.randn(3, 8)).sum().backward()
    _assert_every_parameter_has_gradient(generator)


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_every_discriminator_parameter_gets_a_gradient(norm: str) -> None:
    discriminator = DCGANDiscriminator(resolution=32, base_channels=4, norm=norm)
    output = discriminator(torch.randn(3, 3, 32, 32))
    sum(head.sum() for head in output).backward()
    _assert_every_parameter_has_gradient(discriminator)


def test_dcgan_initialisation() -> None:
    discriminator = DCGANDiscriminator(base_channels=32)
    conv_weights = torch.cat([m.weight.detach().flatten() for m in discriminator.modules() if isinstance(m, nn.Conv2d)])
    norm_weights = torch.cat(
        [m.weight.detach().flatten() for m in discriminator.modules() if isinstance(m, nn.BatchNorm2d)]
    )
    assert conv_weights.mean().abs() < 1e-3
    assert conv_weights.std() == pytest.approx(0.02, rel=0.05)
    assert norm_weights.mean() == pytest.approx(1.0, abs=0.01)
    assert norm_weights.std() == pytest.approx(0.02, rel=0.2)


@pytest.mark.parametrize("resolution", [16, 48, 100])
def test_invalid_resolution_is_rejected(resolution: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        DCGANGenerator(resolution=resolution)
    with pytest.raises(ValueError, match="power of two"):
        DCGANDiscriminator(resolution=resolution)


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="norm"):
        DCGANDiscriminator(norm="layer")
    with pytest.raises(ValueError, match="z of shape"):
        DCGANGenerator(latent_dim=8, resolution=32, base_channels=4)(torch.randn(2, 9))
    with pytest.raises(ValueError, match="images of shape"):
        DCGANDiscriminator(resolution=32, base_channels=4)(torch.randn(2, 3, 64, 64))
