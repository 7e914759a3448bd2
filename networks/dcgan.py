"""DCGAN generator and the two-headed DesIGN discriminator.

Both networks work at any power-of-two resolution R >= 32. The generator grows a 4x4 seed map by transposed
convolutions (kernel 4, stride 2, padding 1) until R; the discriminator mirrors it with strided convolutions back to
4x4. The number of blocks is derived from R: ``log2(R) - 2`` feature maps of resolutions 4, 8, ..., R/2.

Channel schedule (see :func:`dcgan_channel_schedule`): the feature map just before the image (R/2) has
``base_channels`` channels and the count doubles at every halving of the resolution, capped at
``max_multiplier * base_channels`` (8x by default, as in DCGAN). With the defaults at 64 px this is exactly DCGAN's
512-256-128-64; higher resolutions add blocks at the cap near the 4x4 end, so channels never drop below
``base_channels`` and the widest layer never exceeds ``8 * base_channels``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from networks.init import dcgan_init_

DEFAULT_MAX_CHANNEL_MULTIPLIER = 8
NORM_CHOICES = ("batch", "instance", "none")


class DiscriminatorOutput(NamedTuple):
    """Raw logits of the discriminator heads (the losses apply sigmoid / softmax).

    Fields: ``real_fake`` (N,) real-vs-fake logits; ``shape_logits`` (N, num_shapes) and ``texture_logits``
    (N, num_textures) class logits of the classification branch D_b.
    """

    real_fake: Tensor
    shape_logits: Tensor
    texture_logits: Tensor


def num_feature_stages(resolution: int) -> int:
    """Number of intermediate feature maps (resolutions 4, 8, ..., R/2) for an R x R image: ``log2(R) - 2``.

    Raises:
        ValueError: if ``resolution`` is not a power of two >= 32.
    """
    if resolution < 32 or resolution & (resolution - 1) != 0:
        raise ValueError(f"resolution must be a power of two >= 32, got {resolution}")
    return int(math.log2(resolution)) - 2


def dcgan_channel_schedule(
    resolution: int, base_channels: int, max_multiplier: int = DEFAULT_MAX_CHANNEL_MULTIPLIER
) -> list[int]:
    """Channels of the feature maps at resolutions 4, 8, ..., R/2 (generator order, coarse to fine).

    The map at resolution ``R / 2**(k+1)`` has ``base_channels * min(2**k, max_multiplier)`` channels, e.g. for
    R=64, base 64: ``[512, 256, 128, 64]``; for R=128: ``[512, 512, 256, 128, 64]``.
    """
    if base_channels < 1:
        raise ValueError(f"base_channels must be positive, got {base_channels}")
    stages = num_feature_stages(resolution)
    return [base_channels * min(2 ** (stages - 1 - index), max_multiplier) for index in range(stages)]


def make_norm_2d(norm: str, num_channels: int) -> nn.Module:
    """Normalisation layer by name: ``batch`` (BatchNorm2d), ``instance`` (affine InstanceNorm2d) or ``none``."""
    if norm == "batch":
        return nn.BatchNorm2d(num_channels)
    if norm == "instance":
        return nn.InstanceNorm2d(num_channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORM_CHOICES}, got {norm!r}")


class DCGANGenerator(nn.Module):
    """DCGAN generator: latent z (N, latent_dim) -> image (N, out_channels, R, R) in [-1, 1].

    Layout: ConvTranspose(latent_dim -> C_4, kernel 4) to a 4x4 map, then ConvTranspose(4, 2, 1) + BatchNorm + ReLU
    blocks up to R/2 following :func:`dcgan_channel_schedule`, and a final ConvTranspose(4, 2, 1) + tanh to the image.
    Convolutions followed by BatchNorm carry no bias (it would be cancelled), so every parameter takes part in
    every forward pass. Weights use the DCGAN initialisation.
    """

    def __init__(
        self, latent_dim: int = 100, resolution: int = 64, base_channels: int = 64, out_channels: int = 3
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.resolution = resolution
        channels = dcgan_channel_schedule(resolution, base_channels)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, channels[0], kernel_size=4, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        ]
        for in_channels, next_channels in zip(channels[:-1], channels[1:]):
            layers += [
                nn.ConvTranspose2d(in_channels, next_channels, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(next_channels),
                nn.ReLU(inplace=True),
            ]
        layers += [
            nn.ConvTranspose2d(channels[-1], out_channels, kernel_size=4, stride=2, padding=1, bias=True),
            nn.Tanh(),
        ]
        self.layers = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, z: Tensor) -> Tensor:
        """Map latents (N, latent_dim) to images (N, out_channels, R, R) in [-1, 1]."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        return self.layers(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator with a shared trunk and three heads (real/fake, shape classes, texture classes).

    Trunk: Conv(4, 2, 1) + norm + LeakyReLU(0.2) blocks from R x R down to a 4x4 map (no normalisation after the
    first convolution, as in DCGAN), channels following :func:`dcgan_channel_schedule` in reverse. Each head is a 4x4
    valid convolution over the final 4x4 map, i.e. a linear layer on the flattened features: ``real_fake`` gives
    one logit per image, ``shape_logits`` and ``texture_logits`` form the DesIGN classification branch D_b.
    Convolutions followed by a normalisation carry no bias, so all parameters are used in every forward pass.
    SyncBatchNorm conversion is left to the trainer.
    """

    def __init__(
        self,
        resolution: int = 64,
        base_channels: int = 64,
        in_channels: int = 3,
        num_shapes: int = 7,
        num_textures: int = 7,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if norm not in NORM_CHOICES:
            raise ValueError(f"norm must be one of {NORM_CHOICES}, got {norm!r}")
        if num_shapes < 1 or num_textures < 1:
            raise ValueError(f"num_shapes and num_textures must be positive, got {num_shapes}, {num_textures}")
        self.resolution = resolution
        self.in_channels = in_channels
        channels = dcgan_channel_schedule(resolution, base_channels)[::-1]
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels[0], kernel_size=4, stride=2, padding=1, bias=True),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for current_channels, next_channels in zip(channels[:-1], channels[1:]):
            layers += [
                nn.Conv2d(current_channels, next_channels, kernel_size=4, stride=2, padding=1, bias=norm == "none"),
                make_norm_2d(norm, next_channels),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.trunk = nn.Sequential(*layers)
        self.real_fake_head = nn.Conv2d(channels[-1], 1, kernel_size=4)
        self.shape_head = nn.Conv2d(channels[-1], num_shapes, kernel_size=4)
        self.texture_head = nn.Conv2d(channels[-1], num_textures, kernel_size=4)
        dcgan_init_(self)

    def forward(self, images: Tensor) -> DiscriminatorOutput:
        """Score images (N, in_channels, R, R) in [-1, 1]; returns raw logits of the three heads."""
        if images.dim() != 4 or images.shape[1:] != (self.in_channels, self.resolution, self.resolution):
            raise ValueError(
                f"expected images of shape (N, {self.in_channels}, {self.resolution}, {self.resolution}), "
                f"got {tuple(images.shape)}"
            )
        features = self.trunk(images)
        return DiscriminatorOutput(
            real_fake=torch.flatten(self.real_fake_head(features)),
            shape_logits=torch.flatten(self.shape_head(features), start_dim=1),
            texture_logits=torch.flatten(self.texture_head(features), start_dim=1),
        )
