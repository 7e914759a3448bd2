"""The Cityscapes label module: label ids to trainIds, the palette and the colourised maps."""

from __future__ import annotations

import numpy as np
import torch

from metrics.cityscapes_labels import colorize, label_id_to_train_id_table, label_ids_to_train_ids, train_id_colors


def test_label_ids_map_to_train_ids_with_255_for_ignored_ones():
    label_ids = torch.tensor([[7, 8, 26, 24], [0, 1, 29, 255], [33, 23, 11, 4]])
    expected = [[0, 1, 13, 11], [255, 255, 255, 255], [18, 10, 2, 255]]
    assert label_ids_to_train_ids(label_ids).tolist() == expected
    assert label_id_to_train_id_table()[label_ids.numpy()].tolist() == expected


def test_palette_and_colorize_use_the_cityscapes_colours():
    palette = train_id_colors()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[0].tolist() == [128, 64, 128] and palette[13].tolist() == [0, 0, 142]
    assert palette[255].tolist() == [0, 0, 0]
    colours = colorize(torch.tensor([[[0, 13], [255, 10]]], dtype=torch.uint8))
    assert colours.shape == (1, 3, 2, 2) and colours.dtype == torch.uint8
    assert colours[0, :, 0, 1].tolist() == [0, 0, 142] and colours[0, :, 1, 0].tolist() == [0, 0, 0]
