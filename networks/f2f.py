"""F2F: forecasting Mask R-CNN FPN features, after Luc, Couprie, LeCun & Verbeek (ECCV 2018, arXiv 1803.11496).

The forecaster sees the FPN features of ``in_frames`` past frames (4 in the paper) at each pyramid level, stacked on
the channel axis frame-major like :func:`~networks.multiscale_video.stack_frames` (``(B, T, 256, H, W) ->
(B, T * 256, H, W)``), and regresses that level's features of the future frame; the frozen detector heads then turn
the forecast features into instance segmentations. :class:`F2FNetwork` holds one subnetwork per level (P5, P4, P3,
P2), P2 being multi-scale (:class:`MultiscaleF2FSubnetwork`); P6, which Mask R-CNN's FPN builds by subsampling P5,
is derived from the P5 forecast (:func:`derive_p6`) rather than forecast.

Every convolution is initialised He-normal, weights ~ N(0, sqrt(2 / fan_in)) with fan_in = in_channels * k * k, and
biases 0. Outputs are linear: FPN features are unbounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.multiscale_video import pyramid, stack_frames, upsample

FPN_CHANNELS = 256
FPN_LEVELS = ("p5", "p4", "p3", "p2")
MULTISCALE_LEVEL = "p2"
F2F_HIDDEN_LAYERS: tuple[tuple[int, int, int], ...] = (
    (1, 1, 512),
    (3, 2, 512),
    (3, 2, 512),
    (3, 4, 256),
    (3, 4, 256),
    (3, 2, 256),
)
"""(kernel size, dilation, width) of each hidden convolution, input to output."""
F2F_OUTPUT_KERNEL_SIZE = 7


def he_normal_init_(module: nn.Module) -> None:
    """Draw a convolution's weights from N(0, sqrt(2 / fan_in)) and zero its bias; other modules are untouched."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def derive_p6(p5_features: Tensor) -> Tensor:
    """P6 from (forecast) P5 features as Mask R-CNN's FPN builds it: max-pooling with kernel 1 and stride 2.

    Maps (B, C, H, W) to (B, C, ceil(H / 2), ceil(W / 2)), keeping every other row and column from the first.
    """
    return F.max_pool2d(p5_features, kernel_size=1, stride=2)


class F2FSubnetwork(nn.Module):
    """One level's F2F forecaster: ``in_frames * channels`` stacked feature channels -> ``channels`` future ones.

    "Same"-padded stride-1 convolutions with ReLU between and none after the last, (kernel, dilation) -> width:

        1x1 -> 512, 3x3 d2 -> 512, 3x3 d2 -> 512, 3x3 d4 -> 256, 3x3 d4 -> 256, 3x3 d2 -> 256, 7x7 -> channels

    Receptive field 1 + 2 * (0 + 2 + 2 + 4 + 4 + 2 + 3) = 35 pixels of the level (at stride 32 for P5, 1120 image
    pixels). At full width with 4 frames of 256 channels (1024 inputs) this has 10,816,000 parameters; the
    refinement scales of :class:`MultiscaleF2FSubnetwork` use ``in_frames = 5`` (10,947,072). ``width_multiplier``
    scales the hidden widths (512, 256) only: the input and output widths are the detector's.
    """

    def __init__(self, in_frames: int = 4, channels: int = FPN_CHANNELS, width_multiplier: float = 1.0) -> None:
        super().__init__()
        if in_frames < 1 or channels < 1:
            raise ValueError(f"in_frames and channels must be positive, got {in_frames}, {channels}")
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
        self.in_frames = in_frames
        self.channels = channels
        layer_in = in_frames * channels
        layers: list[nn.Module] = []
        for kernel_size, dilation, width in F2F_HIDDEN_LAYERS:
            layer_out = max(1, round(width * width_multiplier))
            padding = dilation * (kernel_size // 2)
            layers += [nn.Conv2d(layer_in, layer_out, kernel_size, padding=padding, dilation=dilation), nn.ReLU()]
            layer_in = layer_out
        self.hidden_layers = nn.Sequential(*layers)
        self.to_features = nn.Conv2d(layer_in, channels, F2F_OUTPUT_KERNEL_SIZE, padding=F2F_OUTPUT_KERNEL_SIZE // 2)
        self.receptive_field = 1 + sum(dilation * (kernel_size - 1) for kernel_size, dilation, _ in F2F_HIDDEN_LAYERS)
        self.receptive_field += F2F_OUTPUT_KERNEL_SIZE - 1
        self.apply(he_normal_init_)

    def forward(self, features: Tensor) -> Tensor:
        """Map past features (B, in_frames, channels, H, W) or stacked (B, in_frames * channels, H, W) to future
        features (B, channels, H, W).

        Raises:
            ValueError: on a wrong input shape.
        """
        return self.to_features(self.hidden_layers(stack_frames(features, self.in_frames, self.channels)))


class MultiscaleF2FSubnetwork(nn.Module):
    """Coarse-to-fine F2F forecaster, used for the high-resolution P2 level.

    With ``X_s`` the stacked past features average-pooled by ``2**(num_scales - 1 - s)`` (:func:`pyramid`,
    s = 0..num_scales - 1, coarse to fine) and ``u`` the bilinear 2x upsampling (:func:`upsample`)::

        Y_0 = F_0(X_0)                              F_0: F2FSubnetwork on in_frames * channels (1024) inputs
        Y_s = u(Y_{s-1}) + F_s(cat[X_s, u(Y_{s-1})])   F_s: F2FSubnetwork on (in_frames + 1) * channels (1280)

    so every finer scale predicts a residual on the upsampled coarser forecast; the last ``Y`` is at full resolution.
    The paper's P2 uses 3 scales, 10,816,000 + 2 * 10,947,072 = 32,710,144 parameters at full width. H and W must
    be divisible by ``2**(num_scales - 1)`` (Detectron pads images to multiples of 32, so P2 maps are multiples of 8).
    """

    def __init__(
        self, num_scales: int = 3, in_frames: int = 4, channels: int = FPN_CHANNELS, width_multiplier: float = 1.0
    ) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be positive, got {num_scales}")
        self.num_scales = num_scales
        self.in_frames = in_frames
        self.channels = channels
        self.scales = nn.ModuleList(
            F2FSubnetwork(in_frames if scale == 0 else in_frames + 1, channels, width_multiplier)
            for scale in range(num_scales)
        )

    def forward(self, features: Tensor) -> list[Tensor]:
        """Forecast at every scale.

        Args:
            features: past features (B, in_frames, channels, H, W) or stacked (B, in_frames * channels, H, W); H and
                W divisible by ``2**(num_scales - 1)``.

        Returns:
            ``[Y_0, ..., Y_{num_scales - 1}]``, coarse to fine, ``Y_s`` of shape
            (B, channels, H / 2**(num_scales - 1 - s), W / 2**(num_scales - 1 - s)).

        Raises:
            ValueError: on a wrong input shape or a size not divisible by ``2**(num_scales - 1)``.
        """
        stacked_features = stack_frames(features, self.in_frames, self.channels)
        predictions: list[Tensor] = []
        for scale, scale_features in zip(self.scales, pyramid(stacked_features, self.num_scales)):
            if not predictions:
                predictions.append(scale(scale_features))
                continue
            upsampled = upsample(predictions[-1])
            predictions.append(upsampled + scale(torch.cat([scale_features, upsampled], dim=1)))
        return predictions

    def predict(self, features: Tensor) -> Tensor:
        """The full-resolution forecast (B, channels, H, W) only; same inputs as :meth:`forward`."""
        return self(features)[-1]


class F2FNetwork(nn.Module):
    """The F2F forecaster of all FPN levels: one independent subnetwork per level in :attr:`subnetworks`.

    Level ``"p2"`` gets a :class:`MultiscaleF2FSubnetwork` of ``p2_scales`` scales when ``p2_scales > 1``; every other
    level (and P2 with ``p2_scales == 1``) an :class:`F2FSubnetwork`. With the paper's levels P5, P4, P3, P2 and
    3 scales at P2 the network has 3 * 10,816,000 + 32,710,144 = 65,158,144 parameters. The paper trains P5 first and
    initialises P4 and P3 from it (:meth:`initialise_from`); P6 comes from the P5 forecast (:meth:`derive_p6`).
    """

    def __init__(
        self,
        levels: Sequence[str] = FPN_LEVELS,
        p2_scales: int = 3,
        width_multiplier: float = 1.0,
        in_frames: int = 4,
        channels: int = FPN_CHANNELS,
    ) -> None:
        super().__init__()
        if not levels or len(set(levels)) != len(levels):
            raise ValueError(f"levels must be non-empty and distinct, got {tuple(levels)}")
        if p2_scales < 1:
            raise ValueError(f"p2_scales must be positive, got {p2_scales}")
        self.levels = tuple(levels)
        self.subnetworks = nn.ModuleDict(
            {
                level: MultiscaleF2FSubnetwork(p2_scales, in_frames, channels, width_multiplier)
                if level == MULTISCALE_LEVEL and p2_scales > 1
                else F2FSubnetwork(in_frames, channels, width_multiplier)
                for level in self.levels
            }
        )

    def forward(self, features: Mapping[str, Tensor], levels: Sequence[str] | None = None) -> dict[str, list[Tensor]]:
        """Forecast the future features of ``levels`` (all of :attr:`levels` by default).

        Args:
            features: level -> past features (B, in_frames, channels, H_l, W_l) or stacked
                (B, in_frames * channels, H_l, W_l); other levels are ignored.
            levels: the levels to forecast, each one of :attr:`levels` and a key of ``features``.

        Returns:
            level -> its list of forecasts (B, channels, h, w), coarse to fine for a multi-scale level (the last at
            (H_l, W_l)), one full-resolution forecast otherwise.

        Raises:
            ValueError: on a level without a subnetwork or without features.
        """
        levels = self.levels if levels is None else tuple(levels)
        unknown = [level for level in levels if level not in self.subnetworks]
        missing = [level for level in levels if level not in features]
        if unknown or missing:
            raise ValueError(
                f"levels without a subnetwork {unknown} (have {list(self.levels)}) or without features {missing}"
            )
        forecasts: dict[str, list[Tensor]] = {}
        for level in levels:
            subnetwork = self.subnetworks[level]
            forecast = subnetwork(features[level])
            forecasts[level] = forecast if isinstance(subnetwork, MultiscaleF2FSubnetwork) else [forecast]
        return forecasts

    @staticmethod
    def derive_p6(p5_forecast: Tensor) -> Tensor:
        """P6 (B, C, ceil(H / 2), ceil(W / 2)) from the P5 forecast (B, C, H, W); see :func:`derive_p6`."""
        return derive_p6(p5_forecast)

    def initialise_from(self, source_level: str, target_level: str) -> None:
        """Copy the weights of ``source_level``'s subnetwork into ``target_level``'s (same architecture needed).

        Raises:
            ValueError: on an unknown level or subnetworks of different architectures (e.g. a single-scale source
                and the multi-scale P2).
        """
        for level in (source_level, target_level):
            if level not in self.subnetworks:
                raise ValueError(f"no subnetwork for level {level!r}, have {list(self.levels)}")
        source_state = self.subnetworks[source_level].state_dict()
        target = self.subnetworks[target_level]
        target_shapes = {name: tensor.shape for name, tensor in target.state_dict().items()}
        if {name: tensor.shape for name, tensor in source_state.items()} != target_shapes:
            raise ValueError(
                f"cannot initialise {target_level!r} from {source_level!r}: their subnetworks differ in architecture"
            )
        target.load_state_dict(source_state)
