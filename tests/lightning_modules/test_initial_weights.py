"""init_weights: every forecaster starts from a checkpoint of its own class, and says so when handed another's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genforecast.cli import main
from lightning_modules.initial_weights import ForeignCheckpointError, initial_state
from lightning_modules.joint_forecaster import JointForecaster
from lightning_modules.seg_forecast import SegForecastAR


def _save(model: torch.nn.Module, path: Path, provenance: dict | None) -> Path:
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": {}}
    if provenance is not None:
        checkpoint["genforecast"] = provenance
    torch.save(checkpoint, path)
    return path


def test_a_checkpoint_of_the_same_class_starts_the_module_with_its_weights(tmp_path: Path):
    torch.manual_seed(0)
    earlier = JointForecaster(width_multiplier=0.125, evaluate_baselines=False)
    path = _save(earlier, tmp_path / "ar.ckpt", {"model": "lightning_modules.joint_forecaster.JointForecaster"})
    torch.manual_seed(1)
    started = JointForecaster(width_multiplier=0.125, evaluate_baselines=False, init_weights=str(path))
    for name, tensor in earlier.state_dict().items():
        assert torch.equal(started.state_dict()[name], tensor), name


def test_a_checkpoint_that_does_not_say_who_wrote_it_is_trusted(tmp_path: Path):
    earlier = SegForecastAR(width_multiplier=1 / 8, evaluate_baselines=False)
    state = initial_state(_save(earlier, tmp_path / "old.ckpt", None), SegForecastAR)
    assert state.keys() == earlier.state_dict().keys()


def test_another_models_checkpoint_is_named_with_both_classes(tmp_path: Path):
    joint = JointForecaster(width_multiplier=0.125, evaluate_baselines=False)
    path = _save(joint, tmp_path / "joint.ckpt", {"model": "lightning_modules.joint_forecaster.JointForecaster",
                                                   "family": "joint", "variant": "ar"})
    with pytest.raises(ForeignCheckpointError, match=r"written by JointForecaster \(joint/ar\), not by SegForecastAR"):
        SegForecastAR(width_multiplier=1 / 8, evaluate_baselines=False, init_weights=str(path))


def test_a_missing_checkpoint_names_the_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="init_weights .*absent.ckpt does not exist"):
        initial_state(tmp_path / "absent.ckpt", SegForecastAR)


def test_the_command_line_reports_a_foreign_checkpoint_in_one_line(tmp_path: Path, capsys):
    s2s = SegForecastAR(width_multiplier=1 / 8, evaluate_baselines=False)
    path = _save(s2s, tmp_path / "s2s.ckpt", {"model": "lightning_modules.seg_forecast.SegForecastAR"})
    code = main(["validate", "--config", "configs/joint/distance_ar_finetune.yaml", "--model.init_weights", str(path),
                 "--experiment.output_dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not by JointForecaster" in err, err
