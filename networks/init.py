"""Weight initialisation helpers shared by the networks.

DCGAN (Radford et al., 2016) initialises every convolution from N(0, 0.02) and every normalisation scale from
N(1, 0.02) with zero shift; the GAN baselines of DesIGN follow the same recipe.
"""

from __future__ import annotations

from torch import nn

DCGAN_INIT_STD = 0.02

_WEIGHTED_LAYERS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)
_NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def dcgan_init_module(module: nn.Module, std: float = DCGAN_INIT_STD) -> None:
    """Initialise a single layer in place: conv/linear weights ~ N(0, std), norm scales ~ N(1, std), shifts and biases 0.

    Layers of other types, and normalisation layers without affine parameters, are left untouched.
    """
    if isinstance(module, _WEIGHTED_LAYERS):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, _NORM_LAYERS):
        if getattr(module, "weight", None) is not None:
            nn.init.normal_(module.weight, mean=1.0, std=std)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def dcgan_init_(network: nn.Module, std: float = DCGAN_INIT_STD) -> nn.Module:
    """Apply :func:`dcgan_init_module` to every sub-module of ``network`` (in place) and return ``network``."""
    network.apply(lambda module: dcgan_init_module(module, std=std))
    return network
