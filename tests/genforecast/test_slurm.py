"""The README's sbatch script on a real single-node SLURM: warned before its time limit, requeued, resumed exactly.

The test's setup starts slurmctld and slurmd (``cluster/local_slurm.sh``; ``make cluster-up`` installs them) and
stops them after. Where SLURM is not installed or its daemons cannot start (not root), the test is skipped and
says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, REPO_ROOT

LOCAL_SLURM = REPO_ROOT / "cluster" / "local_slurm.sh"
SBATCH_SCRIPT = REPO_ROOT / "cluster" / "train.sbatch"
FIT = [str(CONFIGS / "fashion" / "gan.yaml"), "--data.init_args.resolution=32", "--data.init_args.batch_size=4",
       "--model.init_args.base_channels=8", "--model.init_args.classifier_weights=null",
       "--trainer.max_epochs=-1", "--trainer.max_steps=300", "--trainer.limit_val_batches=0",
       "--checkpoint.monitor=null", "--experiment.progress_every_seconds=0"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed (make cluster-up installs Debian's slurm-wlm and munge)")
    if os.geteuid() != 0:
        pytest.skip("starting the SLURM daemons needs root")
    folder = tmp_path_factory.mktemp("slurm")
    started = subprocess.run([str(LOCAL_SLURM), "start", str(folder)], capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        pytest.skip(f"the SLURM daemons did not start: {started.stderr.strip()[-500:]}")
    yield {"SLURM_CONF": str(folder / "slurm.conf")}
    subprocess.run([str(LOCAL_SLURM), "stop", str(folder)], capture_output=True, timeout=60)


def _environment(extra: dict[str, str], fashion_catalogue: Path) -> dict[str, str]:
    # One thread in both runs: the weights are compared bit for bit.
    env = {name: value for name, value in os.environ.items() if not name.startswith(("WANDB_", "SLURM_"))}
    return env | extra | {"FASHION_CATALOGUE": str(fashion_catalogue), "OMP_NUM_THREADS": "1",
                          "PYTHONPATH": str(REPO_ROOT), "WANDB_MODE": "disabled"}


def _job_state(job: str, env: dict[str, str]) -> str:
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=env).stdout
    return next((part.split("=", 1)[1] for part in shown.split() if part.startswith("JobState=")), "UNKNOWN")


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_warned_job_saves_requeues_and_resumes_to_the_uninterrupted_weights(slurm: dict[str, str],
                                                                             fashion_catalogue: Path, tmp_path: Path):
    env = _environment(slurm | {"GENFORECAST_VENV": str(REPO_ROOT / ".venv"), "GENFORECAST_CONFIGS": str(CONFIGS),
                                "TRAINER": "cpu", "LOGGER": "csv"}, fashion_catalogue)
    queued = tmp_path / "queued"
    queued.mkdir()
    log = queued / "job.log"
    submitted = subprocess.run(["sbatch", "--parsable", f"--chdir={queued}", f"--output={log}",
                                str(SBATCH_SCRIPT), *FIT], capture_output=True, text=True, env=env, check=True)
    job = submitted.stdout.strip().split(";")[0]

    # The warning SLURM sends 90 s before the time limit (#SBATCH --signal=SIGUSR1@90), sent now, mid-training.
    _wait_for(lambda: log.is_file() and "[train] step 40/" in log.read_text(), 180, "training to reach step 40")
    subprocess.run(["scancel", "--signal=USR1", job], env=env, check=True)
    _wait_for(lambda: "SIGUSR1: saved" in log.read_text() and _job_state(job, env) in ("PENDING", "REQUEUED"),
              120, "the job to save and requeue itself")
    # A requeued job waits for a begin time a minute or two ahead; release it now, as an administrator could.
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=True)
    _wait_for(lambda: _job_state(job, env) == "COMPLETED", 300, "the requeued job to finish")

    runs = [path for path in (queued / "outputs" / "fashion" / "gan").iterdir() if path.name != "latest"]
    assert [path.name for path in runs] == [f"slurm{job}-0"]  # the requeued job found its own run folder
    manifest = (runs[0] / "run.json").read_text()
    assert '"status": "finished"' in manifest and "last.ckpt" in manifest  # resumed from the saved checkpoint
    resumed = torch.load(runs[0] / "checkpoints" / "last.ckpt", weights_only=True)

    uninterrupted = tmp_path / "uninterrupted"
    uninterrupted.mkdir()
    direct = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "genforecast"), "fit",
                             f"--config={CONFIGS / 'trainer' / 'cpu.yaml'}", f"--config={CONFIGS / 'logger' / 'csv.yaml'}",
                             f"--config={FIT[0]}", *FIT[1:]], cwd=uninterrupted, env=_environment({}, fashion_catalogue),
                            capture_output=True, text=True)
    assert direct.returncode == 0, direct.stderr[-3000:]
    reference = torch.load(next((uninterrupted / "outputs" / "fashion" / "gan").glob("2*")) / "checkpoints" / "last.ckpt",
                           weights_only=True)
    assert resumed["global_step"] == reference["global_step"] == 300
    differing = [name for name, tensor in reference["state_dict"].items()
                 if not torch.equal(tensor, resumed["state_dict"][name])]
    assert not differing, f"{len(differing)} tensors differ after the requeue, e.g. {differing[:3]}"
