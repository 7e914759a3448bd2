"""Future semantic segmentation forecasters of Luc, Neverova, Couprie, Verbeek & LeCun (ICCV 2017, arXiv 1703.07684).

The networks see ``num_input_frames`` past frames (4 in the paper) stacked on the channel axis, frame-major, as in
:mod:`networks.multiscale_video`, and predict the next frame. A frame holds ``in_channels_per_frame`` channels and the
prediction ``out_channels``; the paper's models (:data:`FORECAST_MODALITIES`) are

- X2X: RGB -> RGB (3 -> 3),
- XS2X, XS2S, XS2XS: RGB and the 19 Cityscapes class scores of the Dilation10 segmenter (22 channels, ordered as the
  caller concatenates them) -> RGB, scores or both,
- S2S: scores -> scores (19 -> 19), the paper's main model.

Outputs are linear for every modality: class scores are unbounded pre-softmax values, and an RGB prediction is left
for the caller to squash (the released Lua code applies tanh to RGB outputs only).

Two architectures (:func:`make_segmentation_forecaster`):

- ``"multiscale"``: :class:`MultiscaleSegmentationForecaster`, the paper's two-scale network after Mathieu et al.
- ``"dilated"``: :class:`DilatedSegmentationForecaster`, a single-scale network of dilated convolutions standing for
  the released S2S-dil model, whose layers are only stored in its pretrained weights (see the class for our reading).

Weights keep PyTorch's default initialisation, the Torch7 default of the released code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from networks.forecasting import add_last_frame, zero_
from networks.multiscale_video import GeneratorScale, pyramid, stack_frames, upsample

CITYSCAPES_CLASSES = 19
RGB_CHANNELS = 3
FORECAST_MODALITIES: dict[str, tuple[int, int]] = {
    "X2X": (RGB_CHANNELS, RGB_CHANNELS),
    "XS2X": (RGB_CHANNELS + CITYSCAPES_CLASSES, RGB_CHANNELS),
    "XS2S": (RGB_CHANNELS + CITYSCAPES_CLASSES, CITYSCAPES_CLASSES),
    "XS2XS": (RGB_CHANNELS + CITYSCAPES_CLASSES, RGB_CHANNELS + CITYSCAPES_CLASSES),
    "S2S": (CITYSCAPES_CLASSES, CITYSCAPES_CLASSES),
}
"""Paper model name -> (channels per input frame, channels of the predicted frame)."""

PAPER_COARSE_FEATURE_MAPS = (128, 256, 128)
PAPER_COARSE_KERNEL_SIZES = (3, 3, 3, 3)
PAPER_FINE_FEATURE_MAPS = (128, 256, 128)
PAPER_FINE_KERNEL_SIZES = (5, 3, 3, 5)
DILATED_FEATURE_MAPS = (128, 128, 256, 256, 128)
DILATED_DILATIONS = (1, 2, 4, 8, 16)

Architecture = Literal["multiscale", "dilated"]


def scale_widths(widths: Sequence[int], width_multiplier: float) -> tuple[int, ...]:
    """Multiply every width by ``width_multiplier``, rounding to the nearest integer and keeping at least 1.

    Raises:
        ValueError: if ``width_multiplier`` is not positive.
    """
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
    return tuple(max(1, round(width * width_multiplier)) for width in widths)


def _check_channels(in_channels_per_frame: int, out_channels: int, num_input_frames: int) -> None:
    if min(in_channels_per_frame, out_channels, num_input_frames) < 1:
        raise ValueError(
            f"in_channels_per_frame, out_channels and num_input_frames must be positive, got "
            f"{in_channels_per_frame}, {out_channels}, {num_input_frames}"
        )


class MultiscaleSegmentationForecaster(nn.Module):
    """The paper's two-scale forecaster (S2S and its RGB variants), Mathieu et al.'s generator without the tanh.

    With ``X`` the stacked input frames, ``X_1`` their 2x2 average pooling (:func:`pyramid`) and ``u`` the bilinear
    2x upsampling (:func:`upsample`)::

        Y_1 = G_coarse(X_1)                              (B, out_channels, H / 2, W / 2)
        Y_2 = u(Y_1) + G_fine(cat[X, u(Y_1)])            (B, out_channels, H, W)

    so the fine scale predicts a residual on top of the upsampled coarse prediction. Both scales are
    :class:`~networks.multiscale_video.GeneratorScale` stacks of "same"-padded stride-1 convolutions with ReLU between
    and a linear output conv (feature maps / kernels, the last kernel being the output conv to ``out_channels``):

    - coarse: 128, 256, 128 / 3, 3, 3, 3 on ``num_input_frames * in_channels_per_frame`` channels (76 for S2S),
    - fine: 128, 256, 128 / 5, 3, 3, 5 on those plus ``out_channels`` (95 for S2S),

    i.e. Mathieu et al.'s two coarsest scales, also the released code's two-scale model. The paper-width S2S network
    has 1,654,950 parameters. ``width_multiplier`` scales every hidden width (:func:`scale_widths`). The released code
    upsamples the coarse prediction with nearest-neighbour interpolation; here it is bilinear like the
    Mathieu et al. generator of this package. H and W must be even.
    """

    def __init__(
        self,
        in_channels_per_frame: int = CITYSCAPES_CLASSES,
        out_channels: int = CITYSCAPES_CLASSES,
        num_input_frames: int = 4,
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        _check_channels(in_channels_per_frame, out_channels, num_input_frames)
        self.in_channels_per_frame = in_channels_per_frame
        self.out_channels = out_channels
        self.num_input_frames = num_input_frames
        input_channels = num_input_frames * in_channels_per_frame
        self.coarse = GeneratorScale(
            in_channels=input_channels,
            out_channels=out_channels,
            feature_maps=scale_widths(PAPER_COARSE_FEATURE_MAPS, width_multiplier),
            kernel_sizes=PAPER_COARSE_KERNEL_SIZES,
        )
        self.fine = GeneratorScale(
            in_channels=input_channels + out_channels,
            out_channels=out_channels,
            feature_maps=scale_widths(PAPER_FINE_FEATURE_MAPS, width_multiplier),
            kernel_sizes=PAPER_FINE_KERNEL_SIZES,
        )

    def forward(self, inputs: Tensor) -> list[Tensor]:
        """Predict the next frame at both scales.

        Args:
            inputs: past frames (B, num_input_frames, in_channels_per_frame, H, W), or already stacked
                (B, num_input_frames * in_channels_per_frame, H, W) in frame-major order; H and W even.

        Returns:
            ``[coarse, fine]``: (B, out_channels, H / 2, W / 2) and (B, out_channels, H, W), both linear.

        Raises:
            ValueError: on a wrong input shape or an odd H or W.
        """
        stacked_inputs = stack_frames(inputs, self.num_input_frames, self.in_channels_per_frame)
        height, width = stacked_inputs.shape[-2:]
        if height % 2 or width % 2:
            raise ValueError(
                f"the two-scale forecaster needs an even height and width (its coarse scale halves them), got "
                f"{height}x{width}"
            )
        coarse_inputs, fine_inputs = pyramid(stacked_inputs, 2)
        coarse_prediction = self.coarse(coarse_inputs)
        upsampled = upsample(coarse_prediction)
        return [coarse_prediction, upsampled + self.fine(torch.cat([fine_inputs, upsampled], dim=1))]

    def predict(self, inputs: Tensor) -> Tensor:
        """The full-resolution prediction (B, out_channels, H, W) only; same inputs as :meth:`forward`."""
        return self(inputs)[-1]

    def output_layers(self) -> list[nn.Conv2d]:
        """The linear output convolution of each scale."""
        return [self.coarse.to_frame, self.fine.to_frame]


class DilatedSegmentationForecaster(nn.Module):
    """Single-scale forecaster of dilated 3x3 convolutions, our reading of the paper's S2S-dil model.

    The paper's best S2S model (S2S-dil, released as pretrained weights in facebookresearch/SegmPred) replaces the two
    scales by one full-resolution network whose dilated convolutions grow the receptive field; its layer list is
    stored only in those weights, so the layout below is our reading, not a copy: 3x3 convolutions, "same"-padded,
    stride 1, ReLU between, with (width, dilation)

        128 d1, 128 d2, 256 d4, 256 d8, 128 d16, then a linear 3x3 d1 output conv to ``out_channels``

    i.e. widths like the multiscale network's and dilations doubling layer by layer as in Yu & Koltun's context
    module (part of the Dilation10 segmenter the paper's inputs come from), giving a receptive field of 1 + 2 * (1 + 2 + 4 + 8 + 16 + 1) = 65
    pixels, the size of the released 64x64 training crops. ``width_multiplier`` scales every hidden width. Any H and
    W work; the 1,437,459 paper-width S2S parameters do not depend on them.
    """

    def __init__(
        self,
        in_channels_per_frame: int = CITYSCAPES_CLASSES,
        out_channels: int = CITYSCAPES_CLASSES,
        num_input_frames: int = 4,
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        _check_channels(in_channels_per_frame, out_channels, num_input_frames)
        self.in_channels_per_frame = in_channels_per_frame
        self.out_channels = out_channels
        self.num_input_frames = num_input_frames
        widths = [num_input_frames * in_channels_per_frame, *scale_widths(DILATED_FEATURE_MAPS, width_multiplier)]
        layers: list[nn.Module] = []
        for layer_in, layer_out, dilation in zip(widths[:-1], widths[1:], DILATED_DILATIONS):
            layers += [nn.Conv2d(layer_in, layer_out, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
        self.hidden_layers = nn.Sequential(*layers)
        self.to_frame = nn.Conv2d(widths[-1], out_channels, 3, padding=1)
        self.receptive_field = 1 + 2 * (sum(DILATED_DILATIONS) + 1)

    def forward(self, inputs: Tensor) -> list[Tensor]:
        """Predict the next frame.

        Args:
            inputs: past frames (B, num_input_frames, in_channels_per_frame, H, W), or already stacked
                (B, num_input_frames * in_channels_per_frame, H, W) in frame-major order.

        Returns:
            ``[prediction]``, one (B, out_channels, H, W) linear prediction, a list like the multiscale network's.

        Raises:
            ValueError: on a wrong input shape.
        """
        stacked_inputs = stack_frames(inputs, self.num_input_frames, self.in_channels_per_frame)
        return [self.to_frame(self.hidden_layers(stacked_inputs))]

    def predict(self, inputs: Tensor) -> Tensor:
        """The prediction (B, out_channels, H, W); same inputs as :meth:`forward`."""
        return self(inputs)[-1]

    def output_layers(self) -> list[nn.Conv2d]:
        """The linear output convolution."""
        return [self.to_frame]


def make_segmentation_forecaster(
    architecture: Architecture,
    in_channels_per_frame: int = CITYSCAPES_CLASSES,
    out_channels: int = CITYSCAPES_CLASSES,
    num_input_frames: int = 4,
    width_multiplier: float = 1.0,
) -> MultiscaleSegmentationForecaster | DilatedSegmentationForecaster:
    """Build the ``"multiscale"`` or ``"dilated"`` forecaster (see their classes); both return a list of predictions.

    Raises:
        ValueError: on an unknown architecture.
    """
    networks = {"multiscale": MultiscaleSegmentationForecaster, "dilated": DilatedSegmentationForecaster}
    if architecture not in networks:
        raise ValueError(f"architecture must be one of {sorted(networks)}, got {architecture!r}")
    return networks[architecture](
        in_channels_per_frame=in_channels_per_frame,
        out_channels=out_channels,
        num_input_frames=num_input_frames,
        width_multiplier=width_multiplier,
    )


class ResidualForecaster(nn.Module):
    """A forecaster that predicts the change from the last input frame: ``Y_k = pool_k(X_last) + D_k(X)``
    (:func:`networks.forecasting.add_last_frame`).

    ``D_k`` are the wrapped network's outputs (coarse to fine), read as changes; its output convolutions start at
    zero (:func:`networks.forecasting.zero_`), so training starts from copy-last exactly (the multiscale network's
    fine scale adds the upsampled coarse change, so every scale stays a copy). Not in the papers: the CPU demos train
    for a few hundred steps on a handful of snippets, too little to learn the identity of a 76-channel input from
    scratch, and a model that cannot first match copy-last cannot beat it.
    """

    def __init__(self, network: MultiscaleSegmentationForecaster | DilatedSegmentationForecaster) -> None:
        super().__init__()
        if network.in_channels_per_frame != network.out_channels:
            raise ValueError(f"a residual forecaster needs as many output as input channels per frame, got "
                             f"{network.out_channels} and {network.in_channels_per_frame}")
        self.network = network
        self.num_input_frames = network.num_input_frames
        self.in_channels_per_frame = network.in_channels_per_frame
        self.out_channels = network.out_channels
        zero_(network.output_layers())

    def forward(self, inputs: Tensor) -> list[Tensor]:
        """Per-scale predictions (coarse to fine), as the wrapped network's; same inputs."""
        stacked_inputs = stack_frames(inputs, self.num_input_frames, self.in_channels_per_frame)
        return add_last_frame(self.network(stacked_inputs), stacked_inputs[:, -self.in_channels_per_frame:])

    def predict(self, inputs: Tensor) -> Tensor:
        """The full-resolution prediction only."""
        return self(inputs)[-1]

    def output_layers(self) -> list[nn.Conv2d]:
        """The wrapped network's output convolutions."""
        return self.network.output_layers()
