"""Shape-conditioned generator and mask-aware discriminator (DesIGN's shape + style model).

The generator draws a garment whose silhouette follows a binary shape mask and whose texture is set by a style latent.
The latent seeds the first 4x4 feature map (as in DCGAN); the mask enters every block through spatially-adaptive
normalisation (SPADE, Park et al., 2019): activations are normalised without affine parameters and then modulated
per pixel by ``gamma``/``beta`` maps predicted from the mask resized to the block's resolution. This is the paper's
own "StyleGAN" design, not NVIDIA's StyleGAN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.dcgan import DCGANDiscriminator, DiscriminatorOutput, dcgan_channel_schedule
from networks.init import dcgan_init_module


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a (N, 1, H, W) mask to ``size`` by area averaging, giving the fraction of each cell inside the shape."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask, size=size, mode="area")


class SpatiallyAdaptiveNorm(nn.Module):
    """SPADE normalisation: ``BN(x) * (1 + gamma(m)) + beta(m)``, with ``m`` the mask at the resolution of ``x``.

    ``BN`` is a batch norm without affine parameters; ``gamma`` and ``beta`` are (N, C, H, W) maps produced by a
    3x3 conv + ReLU on the mask followed by one 3x3 conv each. The modulation convs keep PyTorch's default
    (Kaiming-uniform) initialisation: DCGAN's N(0, 0.02) on a one-channel input would make the modulation about
    1e-3 and the mask nearly invisible at the start of training.
    """

    def __init__(self, num_features: int, hidden_channels: int = 32) -> None:
        super().__init__()
        self.normalize = nn.BatchNorm2d(num_features, affine=False)
        self.mask_features = nn.Sequential(nn.Conv2d(1, hidden_channels, kernel_size=3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden_channels, num_features, kernel_size=3, padding=1)
        self.beta = nn.Conv2d(hidden_channels, num_features, kernel_size=3, padding=1)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        """Normalise ``features`` (N, C, H, W) and modulate them with ``mask`` (N, 1, any resolution)."""
        hidden = self.mask_features(resize_mask(mask, (features.shape[-2], features.shape[-1])))
        return self.normalize(features) * (1 + self.gamma(hidden)) + self.beta(hidden)


class MaskModulatedUpBlock(nn.Module):
    """Transposed convolution (no bias, cancelled by the norm) + :class:`SpatiallyAdaptiveNorm` + ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, padding: int, mask_hidden_channels: int
    ) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(
            in_channels, out_channels, kernel_size=4, stride=stride, padding=padding, bias=False
        )
        self.norm = SpatiallyAdaptiveNorm(out_channels, mask_hidden_channels)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        """Upsample ``features`` and modulate them with ``mask``."""
        return self.activation(self.norm(self.upsample(features), mask))


class ShapeConditionedGenerator(nn.Module):
    """Generator conditioned on a garment shape mask and a style (texture) latent.

    forward(z (N, latent_dim), mask (N, 1, R, R) in {0, 1}) -> image (N, 3, R, R) in [-1, 1].

    Layout (same channel schedule and block count as :class:`networks.dcgan.DCGANGenerator`): z seeds a 4x4 map by a
    4x4 transposed convolution; every block up to R/2 is a ConvTranspose(4, 2, 1) followed by SPADE normalisation on
    the mask and ReLU; a final ConvTranspose(4, 2, 1) + tanh produces the image. Every parameter is used in every
    forward pass. The transposed convolutions use the DCGAN initialisation.
    """

    def __init__(
        self, latent_dim: int = 100, resolution: int = 64, base_channels: int = 64, mask_hidden_channels: int = 32
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.resolution = resolution
        channels = dcgan_channel_schedule(resolution, base_channels)
        self.seed = MaskModulatedUpBlock(
            latent_dim, channels[0], stride=1, padding=0, mask_hidden_channels=mask_hidden_channels
        )
        self.blocks = nn.ModuleList(
            MaskModulatedUpBlock(
                in_channels, out_channels, stride=2, padding=1, mask_hidden_channels=mask_hidden_channels
            )
            for in_channels, out_channels in zip(channels[:-1], channels[1:])
        )
        self.to_image = nn.ConvTranspose2d(channels[-1], 3, kernel_size=4, stride=2, padding=1)
        for module in self.modules():
            if isinstance(module, nn.ConvTranspose2d):
                dcgan_init_module(module)

    def forward(self, z: Tensor, mask: Tensor) -> Tensor:
        """Generate images whose shape follows ``mask`` and whose texture is set by ``z``."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        expected_mask_shape = (z.shape[0], 1, self.resolution, self.resolution)
        if tuple(mask.shape) != expected_mask_shape:
            raise ValueError(f"expected mask of shape {expected_mask_shape}, got {tuple(mask.shape)}")
        mask = mask.to(dtype=z.dtype)
        features = self.seed(z[:, :, None, None], mask)
        for block in self.blocks:
            features = block(features, mask)
        return self.to_image(features).tanh()


class MaskAwareDiscriminator(nn.Module):
    """Discriminator that sees the image together with its shape mask (concatenated as a fourth channel).

    Wraps a :class:`networks.dcgan.DCGANDiscriminator` built with ``in_channels=4``; forward(image (N, 3, R, R),
    mask (N, 1, R, R)) -> :class:`networks.dcgan.DiscriminatorOutput` of raw logits.
    """

    def __init__(
        self,
        resolution: int = 64,
        base_channels: int = 64,
        num_shapes: int = 7,
        num_textures: int = 7,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.discriminator = DCGANDiscriminator(
            resolution=resolution,
            base_channels=base_channels,
            in_channels=4,
            num_shapes=num_shapes,
            num_textures=num_textures,
            norm=norm,
        )

    def forward(self, image: Tensor, mask: Tensor) -> DiscriminatorOutput:
        """Score the (image, mask) pairs."""
        expected_mask_shape = (image.shape[0], 1, *image.shape[2:])
        if tuple(mask.shape) != expected_mask_shape:
            raise ValueError(f"expected mask of shape {expected_mask_shape}, got {tuple(mask.shape)}")
        return self.discriminator(torch.cat([image, mask.to(dtype=image.dtype)], dim=1))
