from __future__ import annotations

import pytest
import torch

from datamodules.augment import scale_translate, scale_translate_jitter, to_unit_range


def _batch(seed: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(4, 3, size, size, generator=generator) * 2 - 1
    masks = (torch.rand(4, 1, size, size, generator=generator) > 0.5).float()
    return images, masks


def test_to_unit_range_maps_uint8_to_minus_one_one():
    converted = to_unit_range(torch.tensor([0, 255, 128], dtype=torch.uint8))
    assert converted.dtype == torch.float32
    torch.testing.assert_close(converted, torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]))
    with pytest.raises(TypeError):
        to_unit_range(torch.zeros(2))


def test_zero_jitter_is_identity():
    images, masks = _batch()
    jittered, jittered_masks = scale_translate_jitter(images, masks, 0.0, 0.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(jittered, images, atol=1e-5, rtol=0)
    assert torch.equal(jittered_masks, masks)


def test_translation_shifts_content_and_pads_white():
    images = torch.linspace(-1, 0.5, 8).expand(1, 1, 8, 8).clone()
    masks = torch.ones(1, 1, 8, 8)
    shifted, shifted_masks = scale_translate(images, masks, torch.ones(1), torch.tensor([[0.25, 0.0]]))
    torch.testing.assert_close(shifted[..., 2:], images[..., :6], atol=1e-5, rtol=0)
    torch.testing.assert_close(shifted[..., :2], torch.ones(1, 1, 8, 2))
    assert torch.equal(shifted_masks[..., :2], torch.zeros(1, 1, 8, 2))
    assert torch.equal(shifted_masks[..., 2:], torch.ones(1, 1, 8, 6))


def test_zoom_out_pads_the_border_white_and_masks_zero():
    images, masks = -torch.ones(1, 3, 16, 16), torch.ones(1, 1, 16, 16)
    zoomed, zoomed_masks = scale_translate(images, masks, torch.tensor([0.5]), torch.zeros(1, 2))
    assert torch.allclose(zoomed[..., 0, :], torch.ones(16)) and torch.allclose(zoomed[..., 8, 8], -torch.ones(3))
    assert zoomed_masks[0, 0, 0].sum() == 0 and zoomed_masks[0, 0, 8, 8] == 1


def test_jittered_masks_stay_binary():
    images, masks = _batch()
    _, jittered_masks = scale_translate_jitter(images, masks, 0.2, 0.15, torch.Generator().manual_seed(3))
    assert set(jittered_masks.unique().tolist()) <= {0.0, 1.0}
    assert jittered_masks.dtype == masks.dtype


def test_same_generator_state_gives_same_jitter():
    images, masks = _batch()
    first = scale_translate_jitter(images, masks, 0.2, 0.1, torch.Generator().manual_seed(7))
    second = scale_translate_jitter(images, masks, 0.2, 0.1, torch.Generator().manual_seed(7))
    other = scale_translate_jitter(images, masks, 0.2, 0.1, torch.Generator().manual_seed(8))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])
    image_only, no_mask = scale_translate_jitter(images, None, 0.2, 0.1, torch.Generator().manual_seed(7))
    assert no_mask is None
    torch.testing.assert_close(image_only, first[0])


def test_invalid_arguments_are_refused():
    images, masks = _batch()
    with pytest.raises(ValueError, match="max_scale"):
        scale_translate_jitter(images, masks, 1.0, 0.1, torch.Generator())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_gpu_jitter_agree():
    images, masks = _batch()
    on_cpu = scale_translate_jitter(images, masks, 0.2, 0.1, torch.Generator().manual_seed(5))
    on_gpu = scale_translate_jitter(images.cuda(), masks.cuda(), 0.2, 0.1, torch.Generator().manual_seed(5))
    torch.testing.assert_close(on_gpu[0].cpu(), on_cpu[0], atol=1e-4, rtol=0)
    assert (on_gpu[1].cpu() != on_cpu[1]).float().mean() < 0.01
    cuda_generator = torch.Generator(device="cuda").manual_seed(5)
    on_gpu_from_cuda_generator = scale_translate_jitter(images.cuda(), masks.cuda(), 0.2, 0.1, cuda_generator)
    assert on_gpu_from_cuda_generator[0].device.type == "cuda"
