"""Multi-scale next-frame generator and discriminator of Mathieu, Couprie & LeCun (ICLR 2016, arXiv 1511.05440).

Both networks see the ``num_input_frames`` past frames (4 by default) stacked on the channel axis, frame-major:
``(B, T, C, H, W) -> (B, T * C, H, W)`` so channels ``[t * C, (t + 1) * C)`` hold frame ``t`` (12 channels for four
RGB frames). They work on a pyramid of ``num_scales`` resolutions obtained by 2x2 average pooling (see
:func:`pyramid`); scale ``k = 1..K`` (coarse to fine) has size ``(H, W) / 2**(K - k)``, i.e. 4, 8, 16 and 32 pixels
for the paper's 32x32 training patches.

Configurations are given coarse to fine for the paper's four scales; a network with ``num_scales < 4`` uses the
LAST ``num_scales`` entries, so ``num_scales=1`` is the single-scale ablation: the finest scale's architecture run
at full resolution on the input frames alone.

Weights keep PyTorch's default initialisation. For convolutions and linear layers it draws weights and biases from
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which is the Torch7 default the released Lua code relied on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PAPER_GENERATOR_FEATURE_MAPS = ((128, 256, 128), (128, 256, 128), (128, 256, 512, 256, 128), (128, 256, 512, 256, 128))
PAPER_GENERATOR_KERNEL_SIZES = ((3, 3, 3, 3), (5, 3, 3, 5), (5, 3, 3, 3, 3, 5), (7, 5, 5, 5, 5, 7))
PAPER_DISCRIMINATOR_FEATURE_MAPS = ((64,), (64, 128, 128), (128, 256, 256), (128, 256, 512, 128))
PAPER_DISCRIMINATOR_KERNEL_SIZES = ((3,), (3, 3, 3), (5, 5, 5), (7, 7, 5, 5))
PAPER_DISCRIMINATOR_HIDDEN_UNITS = ((512, 256), (1024, 512), (1024, 512), (1024, 512))


def stack_frames(frames: Tensor, num_input_frames: int, channels: int) -> Tensor:
    """Stack (B, T, C, H, W) frames on the channel axis to (B, T * C, H, W); already stacked inputs pass through.

    Raises:
        ValueError: if the input is neither (B, num_input_frames, channels, H, W) nor (B, num_input_frames * channels,
            H, W).
    """
    if frames.dim() == 5 and frames.shape[1:3] == (num_input_frames, channels):
        return frames.flatten(start_dim=1, end_dim=2)
    if frames.dim() == 4 and frames.shape[1] == num_input_frames * channels:
        return frames
    raise ValueError(
        f"expected input frames of shape (B, {num_input_frames}, {channels}, H, W) or "
        f"(B, {num_input_frames * channels}, H, W), got {tuple(frames.shape)}"
    )


def pyramid(frames: Tensor, num_scales: int) -> list[Tensor]:
    """Average-pool ``frames`` (..., H, W) to ``num_scales`` resolutions, coarse to fine.

    Entry ``k`` (0-based) is pooled by ``2**(num_scales - 1 - k)``, so the last entry is ``frames`` itself. Leading
    dimensions are kept, e.g. (B, T, C, H, W) frames give (B, T, C, h_k, w_k) entries.

    Raises:
        ValueError: if H or W is not divisible by ``2**(num_scales - 1)``.
    """
    if num_scales < 1:
        raise ValueError(f"num_scales must be positive, got {num_scales}")
    if frames.dim() < 3:
        raise ValueError(f"expected frames of shape (..., H, W) with at least one leading dim, got {frames.shape}")
    height, width = frames.shape[-2:]
    factor = 2 ** (num_scales - 1)
    if height % factor != 0 or width % factor != 0:
        raise ValueError(
            f"height and width must be divisible by 2**(num_scales - 1) = {factor} for {num_scales} scales, "
            f"got {height}x{width}"
        )
    flat = frames.reshape(-1, 1, height, width)
    levels = []
    for scale in range(num_scales - 1):
        pooling = 2 ** (num_scales - 1 - scale)
        levels.append(F.avg_pool2d(flat, pooling).reshape(*frames.shape[:-2], height // pooling, width // pooling))
    return [*levels, frames]


def upsample(prediction: Tensor) -> Tensor:
    """The generator's 2x upsampling ``u``: bilinear, ``align_corners=False`` (stays within the input's range)."""
    return F.interpolate(prediction, scale_factor=2, mode="bilinear", align_corners=False)


def _select_last_scales(name: str, per_scale: Sequence[Sequence[int]], num_scales: int) -> list[tuple[int, ...]]:
    if not 1 <= num_scales <= len(per_scale):
        raise ValueError(f"num_scales must be in 1..{len(per_scale)} for the given {name}, got {num_scales}")
    return [tuple(entry) for entry in per_scale[len(per_scale) - num_scales :]]


class GeneratorScale(nn.Module):
    """One scale G'_k of the generator: "same"-padded stride-1 convs with ReLU between, then a conv to one frame.

    ``in_channels -> feature_maps[0] -> ... -> feature_maps[-1] -> out_channels`` with ``kernel_sizes`` (one more
    kernel than feature maps, the last belonging to the output conv ``to_frame``). No activation after ``to_frame``:
    its output is the residual added to the upsampled coarser prediction (or the whole pre-tanh prediction at the
    coarsest scale).
    """

    def __init__(
        self, in_channels: int, out_channels: int, feature_maps: Sequence[int], kernel_sizes: Sequence[int]
    ) -> None:
        super().__init__()
        if len(kernel_sizes) != len(feature_maps) + 1:
            raise ValueError(
                f"a generator scale needs one kernel per feature map plus one for the output conv, got "
                f"feature maps {tuple(feature_maps)} and kernels {tuple(kernel_sizes)}"
            )
        if any(kernel_size < 1 or kernel_size % 2 == 0 for kernel_size in kernel_sizes):
            raise ValueError(f"generator kernels must be odd for 'same' padding, got {tuple(kernel_sizes)}")
        widths = [in_channels, *feature_maps]
        layers: list[nn.Module] = []
        for layer_in, layer_out, kernel_size in zip(widths[:-1], widths[1:], kernel_sizes[:-1]):
            layers += [nn.Conv2d(layer_in, layer_out, kernel_size, padding=kernel_size // 2), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.to_frame = nn.Conv2d(widths[-1], out_channels, kernel_sizes[-1], padding=kernel_sizes[-1] // 2)

    def forward(self, inputs: Tensor) -> Tensor:
        """Map (B, in_channels, h, w) to (B, out_channels, h, w)."""
        return self.to_frame(self.features(inputs))


class MultiscaleFrameGenerator(nn.Module):
    """Mathieu et al.'s multi-scale generator: past frames -> next frame at every scale, coarse to fine.

    With ``X_k`` the stacked input frames pooled to scale k (:func:`pyramid`) and ``u`` the bilinear 2x upsampling
    (:func:`upsample`; the paper does not name the interpolation), the predictions are::

        Y_1 = tanh(G'_1(X_1))
        Y_k = tanh(u(Y_{k-1}) + G'_k(cat[X_k, u(Y_{k-1})]))    for k = 2..K

    i.e. every scale predicts a residual on top of the upsampled coarser prediction, and the tanh is applied to each
    scale's sum, as in the released Lua code, so every Y_k lies in (-1, 1) like the data. The coarsest scale sees
    ``num_input_frames * channels`` channels (12), the others 3 more (15).

    Paper configuration (coarse to fine, scales of 4, 8, 16 and 32 px on 32x32 training patches), feature maps /
    kernels, the last kernel being the output conv to ``channels``:

    - scale 1: 128, 256, 128 / 3, 3, 3, 3
    - scale 2: 128, 256, 128 / 5, 3, 3, 5
    - scale 3: 128, 256, 512, 256, 128 / 5, 3, 3, 3, 3, 5
    - scale 4: 128, 256, 512, 256, 128 / 7, 5, 5, 5, 5, 7

    giving 12,569,740 parameters (with biases). Convolutions are "same"-padded and stride 1, so the network is fully
    convolutional: any H, W divisible by ``2**(num_scales - 1)`` works (32x32 patches in training, 240x320 frames at
    test time, whose coarsest scale is 30x40). ``num_scales < 4`` keeps the last ``num_scales`` scales of the lists.
    """

    def __init__(
        self,
        num_input_frames: int = 4,
        channels: int = 3,
        num_scales: int = 4,
        feature_maps: Sequence[Sequence[int]] = PAPER_GENERATOR_FEATURE_MAPS,
        kernel_sizes: Sequence[Sequence[int]] = PAPER_GENERATOR_KERNEL_SIZES,
    ) -> None:
        super().__init__()
        if num_input_frames < 1 or channels < 1:
            raise ValueError(f"num_input_frames and channels must be positive, got {num_input_frames}, {channels}")
        if len(feature_maps) != len(kernel_sizes):
            raise ValueError(f"got {len(feature_maps)} scales of feature maps but {len(kernel_sizes)} of kernels")
        self.num_input_frames = num_input_frames
        self.channels = channels
        self.num_scales = num_scales
        input_channels = num_input_frames * channels
        self.scales = nn.ModuleList(
            GeneratorScale(
                in_channels=input_channels if index == 0 else input_channels + channels,
                out_channels=channels,
                feature_maps=scale_feature_maps,
                kernel_sizes=scale_kernel_sizes,
            )
            for index, (scale_feature_maps, scale_kernel_sizes) in enumerate(
                zip(
                    _select_last_scales("feature_maps", feature_maps, num_scales),
                    _select_last_scales("kernel_sizes", kernel_sizes, num_scales),
                )
            )
        )

    def forward(self, inputs: Tensor) -> list[Tensor]:
        """Predict the next frame at every scale.

        Args:
            inputs: past frames (B, num_input_frames, channels, H, W), or already stacked (B, num_input_frames *
                channels, H, W) in frame-major order; H and W divisible by ``2**(num_scales - 1)``.

        Returns:
            ``[Y_1, ..., Y_K]``, coarse to fine, ``Y_k`` of shape (B, channels, H / 2**(K - k), W / 2**(K - k)) in
            (-1, 1).

        Raises:
            ValueError: on a wrong input shape or a size not divisible by ``2**(num_scales - 1)``.
        """
        stacked_inputs = stack_frames(inputs, self.num_input_frames, self.channels)
        predictions: list[Tensor] = []
        for scale, scale_inputs in zip(self.scales, pyramid(stacked_inputs, self.num_scales)):
            if not predictions:
                predictions.append(torch.tanh(scale(scale_inputs)))
                continue
            upsampled = upsample(predictions[-1])
            predictions.append(torch.tanh(upsampled + scale(torch.cat([scale_inputs, upsampled], dim=1))))
        return predictions

    def predict(self, inputs: Tensor) -> Tensor:
        """The finest prediction (B, channels, H, W) only; same inputs as :meth:`forward`."""
        return self(inputs)[-1]


def _discriminator_conv_output_size(input_size: int, kernel_sizes: Sequence[int]) -> int:
    return input_size - sum(kernel_size - 1 for kernel_size in kernel_sizes)


class DiscriminatorScale(nn.Module):
    """One scale D_k of the discriminator: valid convs, a 2x2 max-pool, fully connected layers, one logit.

    ``in_channels -> feature_maps`` by unpadded stride-1 convs with ``kernel_sizes``, each followed by ReLU, then a
    2x2 max-pool (stride 2), flattening and linear layers ``hidden_units`` with ReLU between, ending in a linear
    layer to one raw logit. On an ``input_size`` square patch the conv output has side
    ``input_size - sum(kernel - 1)`` and the pooled map ``conv_output_size // 2``, which sets the first linear
    layer's input ``feature_maps[-1] * pooled_size**2``. No normalisation anywhere.
    """

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        feature_maps: Sequence[int],
        kernel_sizes: Sequence[int],
        hidden_units: Sequence[int],
    ) -> None:
        super().__init__()
        if not feature_maps or len(feature_maps) != len(kernel_sizes):
            raise ValueError(
                f"a discriminator scale needs at least one conv and one kernel per feature map, got feature maps "
                f"{tuple(feature_maps)} and kernels {tuple(kernel_sizes)}"
            )
        self.input_size = input_size
        self.conv_output_size = _discriminator_conv_output_size(input_size, kernel_sizes)
        self.pooled_size = self.conv_output_size // 2
        if self.pooled_size < 1:
            raise ValueError(
                f"discriminator kernels {tuple(kernel_sizes)} leave {self.conv_output_size}x{self.conv_output_size} "
                f"of a {input_size}x{input_size} input; at least 2x2 is needed before the 2x2 max-pool"
            )
        widths = [in_channels, *feature_maps]
        layers: list[nn.Module] = []
        for layer_in, layer_out, kernel_size in zip(widths[:-1], widths[1:], kernel_sizes):
            layers += [nn.Conv2d(layer_in, layer_out, kernel_size), nn.ReLU(inplace=True)]
        layers += [nn.MaxPool2d(2), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        units = [feature_maps[-1] * self.pooled_size**2, *hidden_units]
        classifier: list[nn.Module] = []
        for layer_in, layer_out in zip(units[:-1], units[1:]):
            classifier += [nn.Linear(layer_in, layer_out), nn.ReLU(inplace=True)]
        classifier.append(nn.Linear(units[-1], 1))
        self.classifier = nn.Sequential(*classifier)

    def forward(self, inputs: Tensor) -> Tensor:
        """Map (B, in_channels, input_size, input_size) to logits (B,)."""
        return self.classifier(self.features(inputs)).squeeze(1)


class MultiscaleFrameDiscriminator(nn.Module):
    """Mathieu et al.'s multi-scale discriminator: one real/fake logit per scale for (past frames, next frame).

    Scale k sees the stacked real input frames pooled to scale k concatenated with the real or predicted next frame
    at that scale (``(num_input_frames + 1) * channels`` = 15 channels) and is a :class:`DiscriminatorScale`.
    Paper configuration (coarse to fine), feature maps / kernels / hidden fully connected units (the paper's final
    ``1`` is the logit layer, always present), with the spatial sizes on 32x32 patches (input -> after each valid
    conv -> after the 2x2 max-pool):

    - scale 1: 64 / 3 / 512, 256; 4 -> 2 -> 1, first linear layer 64 inputs
    - scale 2: 64, 128, 128 / 3, 3, 3 / 1024, 512; 8 -> 6 -> 4 -> 2 -> 1, 128 inputs
    - scale 3: 128, 256, 256 / 5, 5, 5 / 1024, 512; 16 -> 12 -> 8 -> 4 -> 2, 1024 inputs
    - scale 4: 128, 256, 512, 128 / 7, 7, 5, 5 / 1024, 512; 32 -> 26 -> 20 -> 16 -> 12 -> 6, 4608 inputs

    The paper does not list the pooling; the released code pools after the convs at some scales. Here every scale
    ends its convs with one 2x2 max-pool, which works at every paper scale (the smallest conv output is 2x2) and
    keeps the finest scale's first linear layer at 4.7M weights instead of 18.9M. The linear sizes are derived from
    ``patch_size``, so the discriminator runs on square training patches of exactly that size; ``num_scales < 4``
    keeps the last ``num_scales`` entries of the lists. Every parameter is used in every forward pass.
    """

    def __init__(
        self,
        num_input_frames: int = 4,
        channels: int = 3,
        patch_size: int = 32,
        num_scales: int = 4,
        feature_maps: Sequence[Sequence[int]] = PAPER_DISCRIMINATOR_FEATURE_MAPS,
        kernel_sizes: Sequence[Sequence[int]] = PAPER_DISCRIMINATOR_KERNEL_SIZES,
        hidden_units: Sequence[Sequence[int]] = PAPER_DISCRIMINATOR_HIDDEN_UNITS,
    ) -> None:
        super().__init__()
        if num_input_frames < 1 or channels < 1:
            raise ValueError(f"num_input_frames and channels must be positive, got {num_input_frames}, {channels}")
        if not len(feature_maps) == len(kernel_sizes) == len(hidden_units):
            raise ValueError(
                f"got {len(feature_maps)} scales of feature maps, {len(kernel_sizes)} of kernels and "
                f"{len(hidden_units)} of hidden units"
            )
        factor = 2 ** (num_scales - 1)
        if patch_size < factor or patch_size % factor != 0:
            raise ValueError(
                f"patch_size must be a positive multiple of 2**(num_scales - 1) = {factor}, got {patch_size}"
            )
        self.num_input_frames = num_input_frames
        self.channels = channels
        self.patch_size = patch_size
        self.num_scales = num_scales
        self.scale_sizes = [patch_size // 2 ** (num_scales - 1 - index) for index in range(num_scales)]
        self.scales = nn.ModuleList(
            DiscriminatorScale(
                in_channels=(num_input_frames + 1) * channels,
                input_size=input_size,
                feature_maps=scale_feature_maps,
                kernel_sizes=scale_kernel_sizes,
                hidden_units=scale_hidden_units,
            )
            for input_size, scale_feature_maps, scale_kernel_sizes, scale_hidden_units in zip(
                self.scale_sizes,
                _select_last_scales("feature_maps", feature_maps, num_scales),
                _select_last_scales("kernel_sizes", kernel_sizes, num_scales),
                _select_last_scales("hidden_units", hidden_units, num_scales),
            )
        )

    def forward(self, inputs_pyramid: Tensor | Sequence[Tensor], frames_pyramid: Sequence[Tensor]) -> list[Tensor]:
        """Score next frames at every scale.

        Args:
            inputs_pyramid: the real past frames per scale, coarse to fine, each (B, num_input_frames * channels,
                h_k, w_k) or (B, num_input_frames, channels, h_k, w_k); or a single full-resolution tensor of either
                form, pooled internally with :func:`pyramid`.
            frames_pyramid: the real or predicted next frame per scale, coarse to fine, each (B, channels, h_k, w_k)
                (e.g. the generator's output list).

        Returns:
            Raw logits (B,) per scale, coarse to fine.

        Raises:
            ValueError: on a wrong number of scales or a tensor not of its scale's shape (h_k = w_k = patch_size /
                2**(num_scales - k)).
        """
        if isinstance(inputs_pyramid, Tensor):
            inputs_pyramid = pyramid(inputs_pyramid, self.num_scales)
        if len(inputs_pyramid) != self.num_scales or len(frames_pyramid) != self.num_scales:
            raise ValueError(
                f"expected {self.num_scales} scales of inputs and frames, got {len(inputs_pyramid)} and "
                f"{len(frames_pyramid)}"
            )
        logits = []
        for scale, size, scale_inputs, scale_frames in zip(
            self.scales, self.scale_sizes, inputs_pyramid, frames_pyramid
        ):
            stacked_inputs = stack_frames(scale_inputs, self.num_input_frames, self.channels)
            expected_frames = (stacked_inputs.shape[0], self.channels, size, size)
            if stacked_inputs.shape[-2:] != (size, size) or scale_frames.shape != expected_frames:
                raise ValueError(
                    f"expected inputs of size {size}x{size} and frames of shape {expected_frames} at this scale, got "
                    f"{tuple(stacked_inputs.shape)} and {tuple(scale_frames.shape)}"
                )
            logits.append(scale(torch.cat([stacked_inputs, scale_frames], dim=1)))
        return logits
