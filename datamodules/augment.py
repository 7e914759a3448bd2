"""Batch augmentations applied inside the LightningModule, on whatever device the batch is on.

Images are float tensors in the [-1, 1] convention (:func:`to_unit_range`), where +1 is white: catalogue images
are garments on white backgrounds, so pixels moved in from outside the frame are white. Random parameters are
drawn from a ``torch.Generator`` owned by the caller (a handful of numbers per batch) on the generator's own
device and then moved to the batch's device; with a CPU generator a run gives the same augmentations on CPU and
GPU for the same generator state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 images in [0, 255] to float32 in [-1, 1] (0 -> -1, 255 -> +1)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    return images.to(torch.float32) / 127.5 - 1.0


def scale_translate(images: torch.Tensor, masks: torch.Tensor | None, scale: torch.Tensor,
                    translate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Zoom each image by ``scale`` (B,) about its centre, then shift it by ``translate`` (B, 2) = (x, y).

    Translations are fractions of the image width and height (0.25 moves the content a quarter of the image
    right/down). Images in [-1, 1] are resampled bilinearly and padded with white (+1); masks (0/1) are
    resampled with the same grid, padded with 0 and thresholded at 0.5 so they stay binary and aligned with the
    image. Images and masks go through one ``affine_grid`` and one ``grid_sample`` call.
    """
    batch = images.shape[0]
    scale = scale.to(device=images.device, dtype=images.dtype)
    translate = translate.to(device=images.device, dtype=images.dtype)
    theta = torch.zeros(batch, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = -2.0 * translate / scale[:, None]
    channels = images.shape[1]
    stacked = images - 1.0 if masks is None else torch.cat([images - 1.0, masks.to(images.dtype)], dim=1)
    grid = F.affine_grid(theta, list(stacked.shape), align_corners=False)
    warped = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped_images = warped[:, :channels] + 1.0
    if masks is None:
        return warped_images, None
    return warped_images, (warped[:, channels:] > 0.5).to(masks.dtype)


def scale_translate_jitter(images: torch.Tensor, masks: torch.Tensor | None, max_scale: float, max_translate: float,
                           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DesIGN's random scaling and translation jitter of a batch (B, C, H, W) in [-1, 1], with optional masks.

    Per image, the scale is uniform in [1 - max_scale, 1 + max_scale] and each translation component uniform in
    [-max_translate, max_translate] (fractions of the image size); see :func:`scale_translate`. The random
    numbers (three per image) are drawn on ``generator``'s device and moved to the tensors' device, so a CPU
    generator gives identical jitter on every device. With ``max_scale = max_translate = 0`` the batch is returned
    unchanged up to float rounding.
    """
    if not 0.0 <= max_scale < 1.0 or max_translate < 0.0:
        raise ValueError(f"need 0 <= max_scale < 1 and max_translate >= 0, got {max_scale} and {max_translate}")
    uniform = torch.rand(images.shape[0], 3, generator=generator, device=generator.device, dtype=torch.float64)
    uniform = uniform * 2.0 - 1.0
    scale = 1.0 + max_scale * uniform[:, 0]
    translate = max_translate * uniform[:, 1:]
    return scale_translate(images, masks, scale, translate)
