from __future__ import annotations

import pytest
import torch
from torch import nn

from networks.conditional import MaskAwareDiscriminator, ShapeConditionedGenerator
from networks.dcgan import DCGANDiscriminator, DiscriminatorOutput


def _parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _random_masks(batch_size: int, resolution: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch_size, 1, resolution, resolution, generator=generator) > 0.5).float()


def _box_masks(batch_size: int, resolution: int, start: int, stop: int) -> torch.Tensor:
    masks = torch.zeros(batch_size, 1, resolution, resolution)
    masks[:, :, start:stop, start:stop] = 1
    return masks


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_generator_output_shape_and_range(resolution: int) -> None:
    generator = ShapeConditionedGenerator(latent_dim=16, resolution=resolution, base_channels=4)
    images = generator(torch.randn(2, 16), _random_masks(2, resolution))
    assert images.shape == (2, 3, resolution, resolution)
    assert images.abs().max() <= 1


def test_256_pixel_generator() -> None:
    generator = ShapeConditionedGenerator(latent_dim=8, resolution=256, base_channels=2, mask_hidden_channels=4)
    assert generator(torch.randn(1, 8), _random_masks(1, 256)).shape == (1, 3, 256, 256)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_discriminator_output_shapes(resolution: int) -> None:
    discriminator = MaskAwareDiscriminator(resolution=resolution, base_channels=4, num_shapes=7, num_textures=6)
    output = discriminator(torch.randn(2, 3, resolution, resolution), _random_masks(2, resolution))
    assert isinstance(output, DiscriminatorOutput)
    assert output.real_fake.shape == (2,)
    assert output.shape_logits.shape == (2, 7)
    assert output.texture_logits.shape == (2, 6)


def test_discriminator_composes_a_four_channel_dcgan_discriminator() -> None:
    discriminator = MaskAwareDiscriminator(resolution=32, base_channels=4, norm="instance")
    assert isinstance(discriminator.discriminator, DCGANDiscriminator)
    assert discriminator.discriminator.in_channels == 4


def test_parameter_count_grows_with_resolution() -> None:
    counts = [_parameter_count(ShapeConditionedGenerator(resolution=r, base_channels=4)) for r in (32, 64, 128)]
    assert counts == sorted(set(counts))


def test_every_parameter_gets_a_gradient() -> None:
    generator = ShapeConditionedGenerator(latent_dim=8, resolution=32, base_channels=4)
    discriminator = MaskAwareDiscriminator(resolution=32, base_channels=4)
    masks = _random_masks(3, 32)
    images = generator(torch.randn(3, 8), masks)
    sum(head.sum() for head in discriminator(images, masks)).backward()
    for module in (generator, discriminator):
        for name, parameter in module.named_parameters():
            assert parameter.grad is not None, f"{name} received no gradient"
            assert parameter.grad.abs().sum() > 0, f"{name} received a zero gradient"


def test_generator_output_depends_on_mask_and_latent() -> None:
    torch.manual_seed(0)
    generator = ShapeConditionedGenerator(latent_dim=8, resolution=32, base_channels=8)
    z = torch.randn(4, 8)
    small_box, large_box = _box_masks(4, 32, 12, 20), _box_masks(4, 32, 4, 28)
    with torch.no_grad():
        reference = generator(z, small_box)
        other_mask = generator(z, large_box)
        other_latent = generator(torch.randn(4, 8), small_box)
    scale = reference.abs().mean()
    assert (reference - other_mask).abs().mean() > 0.1 * scale
    assert (reference - other_latent).abs().mean() > 0.1 * scale


def test_mask_shape_is_checked() -> None:
    generator = ShapeConditionedGenerator(latent_dim=8, resolution=32, base_channels=4)
    with pytest.raises(ValueError, match="mask of shape"):
        generator(torch.randn(2, 8), _random_masks(2, 64))
    with pytest.raises(ValueError, match="mask of shape"):
        MaskAwareDiscriminator(resolution=32, base_channels=4)(torch.randn(2, 3, 32, 32), _random_masks(1, 32))
