"""Checkpoints and configs that use a hyperparameter's earlier name still load, with the value they hold."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_modules.frame_gan import FrameGAN
from lightning_modules.seg_forecast import SegForecastAR

RENAMED = [
    (FrameGAN, "lp", "reconstruction_p", {"width_multiplier": 1 / 16, "lambda_adv": 0.0}),
    (SegForecastAR, "lambda_l1", "lambda_lp", {"width_multiplier": 1 / 8, "evaluate_baselines": False}),
]


@pytest.mark.parametrize(("module", "old", "new", "options"), RENAMED, ids=[entry[0].__name__ for entry in RENAMED])
def test_a_checkpoint_written_under_the_old_name_loads_with_its_value(module: type[L.LightningModule], old: str,
                                                                      new: str, options: dict, tmp_path: Path):
    torch.manual_seed(0)
    model = module(**options)
    hyperparameters = dict(model.hparams)
    assert old not in hyperparameters and hyperparameters.pop(new) == 1.0
    path = tmp_path / "earlier.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hyperparameters | {old: 2.0},
                "pytorch-lightning_version": L.__version__}, path)
    with pytest.warns(FutureWarning, match=f"'{old}' is now called '{new}'"):
        restored = module.load_from_checkpoint(path, weights_only=False)
    assert restored.hparams[new] == 2.0 and old not in restored.hparams
    for name, tensor in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name


def test_the_renamed_weight_is_the_one_the_loss_uses():
    torch.manual_seed(0)
    frames = {"scores": torch.randn(2, 7, 19, 16, 32).half(), "frames": torch.zeros(2, 7, 3, 16, 32, dtype=torch.uint8)}
    losses = {}
    for weight in (1.0, 3.0):
        torch.manual_seed(0)
        model = SegForecastAR(width_multiplier=1 / 8, evaluate_baselines=False, lambda_lp=weight, lambda_gdl=0.0)
        losses[weight] = model.generator_losses(frames, torch.Generator())["loss"]
    torch.testing.assert_close(losses[3.0], 3 * losses[1.0])
