"""Two CPU processes train an adversarial model with DDP; both ranks must end with identical weights."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import REPO_ROOT

CHILD = Path(__file__).with_name("ddp_adversarial_child.py")


def test_two_rank_ddp_gan_keeps_ranks_identical(fashion_catalogue: Path, tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "WANDB_MODE": "disabled"}
    for variable in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(variable, None)
    completed = subprocess.run([sys.executable, str(CHILD), str(fashion_catalogue), str(tmp_path)], env=env,
                               cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["wrapped_separately"] and rank1["wrapped_separately"]
    assert rank0["step_index"] == rank1["step_index"] == 3
    assert rank0["parameters"].keys() == rank1["parameters"].keys()
    for name, tensor in rank0["parameters"].items():
        assert torch.equal(tensor, rank1["parameters"][name]), f"{name} differs between ranks"
