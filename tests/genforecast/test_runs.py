"""Run folders: ids every rank agrees on, requeued jobs finding their run, and what --ckpt_path names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from genforecast import runs

SCHEDULER_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT", "SLURM_ARRAY_JOB_ID",
                       "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "RANK", "LOCAL_RANK", "GENFORECAST_RUN_ID",
                       "GENFORECAST_PARENT_RUN")


@pytest.fixture(autouse=True)
def no_scheduler(monkeypatch: pytest.MonkeyPatch):
    for variable in SCHEDULER_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def _checkpoint(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {}}, path)
    return path


def test_new_runs_claim_distinct_folders_in_the_same_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runs, "_timestamp", lambda: "20260101-000000")
    claimed = [runs.claim_run_folder(tmp_path, "fit").run_id for _ in range(3)]
    assert claimed == ["20260101-000000", "20260101-000000-2", "20260101-000000-3"]
    assert runs.claim_run_folder(tmp_path, "validate").run_id == "20260101-000000-validate"


def test_srun_tasks_share_a_folder_and_a_requeued_job_continues_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    first = runs.claim_run_folder(tmp_path, "fit")
    assert (first.run_id, first.continues) == ("slurm42-0", False)
    monkeypatch.setenv("SLURM_PROCID", "1")  # another task: same folder, created by task 0
    assert runs.claim_run_folder(tmp_path, "fit").path == first.path
    _checkpoint(first.path / "checkpoints" / "last.ckpt", 10)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert runs.claim_run_folder(tmp_path, "fit") == runs.RunFolder(first.path, tmp_path, "slurm42-0", True)


def test_a_batch_script_without_srun_finds_its_newest_folder_after_a_requeue(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    first = runs.claim_run_folder(tmp_path, "fit")
    second = runs.claim_run_folder(tmp_path, "fit")  # the same variant twice in one script
    assert (first.run_id, second.run_id) == ("slurm7", "slurm7-2")
    (tmp_path / "slurm70").mkdir()  # job 70 is another job, not a run of job 7
    for run in (first, second, runs.RunFolder(tmp_path / "slurm70", tmp_path, "slurm70", False)):
        _checkpoint(run.path / "checkpoints" / "last.ckpt", 1)
    os.utime(second.path / "checkpoints", (1e9, 1e9))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    resumed = runs.claim_run_folder(tmp_path, "fit")
    assert resumed.continues and resumed.path == first.path


def test_ranks_launched_by_a_genforecast_process_use_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run = runs.claim_run_folder(tmp_path / "a", "fit")
    runs.hand_run_to_launched_ranks(run)
    assert runs.claim_run_folder(tmp_path / "a", "fit") != run  # this process is not a launched rank
    monkeypatch.setattr(os, "getppid", lambda: os.getpid())  # as seen from a rank this process launched
    assert runs.claim_run_folder(tmp_path / "a", "fit").path == run.path.resolve()
    assert runs.claim_run_folder(tmp_path / "b", "fit").path.parent == tmp_path / "b"  # another variant: its own


def test_last_and_best_name_the_newest_fit_and_fail_clearly_before_any(tmp_path: Path):
    assert runs.resolve_checkpoint("last", tmp_path, "fit") is None  # a fit starts from scratch
    with pytest.raises(runs.RunFolderError, match="train it first"):
        runs.resolve_checkpoint("last", tmp_path, "validate")
    run = runs.claim_run_folder(tmp_path, "fit")
    last = _checkpoint(run.path / "checkpoints" / "last.ckpt", 8)
    best = _checkpoint(run.path / "checkpoints" / "epoch=0-step=4.ckpt", 4)
    runs.point_latest(tmp_path, run.path)
    assert runs.resolve_checkpoint("last", tmp_path, "validate") == last.resolve()
    with pytest.raises(runs.RunFolderError, match="no best checkpoint"):
        runs.resolve_checkpoint("best", tmp_path, "validate")
    runs.update_manifest(run.path, best_checkpoint=str(best))
    assert runs.resolve_checkpoint("best", tmp_path, "validate") == best


def test_a_damaged_checkpoint_names_the_newest_loadable_one(tmp_path: Path):
    run = runs.claim_run_folder(tmp_path, "fit")
    runs.update_manifest(run.path, stage="fit")
    folder = run.path / "checkpoints"
    _checkpoint(folder / "epoch=0-step=2.ckpt", 2)
    _checkpoint(folder / "epoch=0-step=4.ckpt", 4)
    _checkpoint(folder / "diverged-step=6.ckpt", 6)
    last = _checkpoint(folder / "last.ckpt", 6)
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(runs.RunFolderError, match=r"is damaged.*epoch=0-step=4\.ckpt \(step 4\)"):
        runs.check_loadable(last)


def test_a_run_whose_config_failed_leaves_no_folder(tmp_path: Path):
    run = runs.claim_run_folder(tmp_path, "fit")
    runs.release_unused(run)
    assert not run.path.exists()
