"""``genforecast bench data`` at tiny scale: every pipeline builds its caches, delivers batches with 0 and 1 workers,
and its row's cores per GPU is the GPU demand over the single-core rate (no timing is asserted)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genforecast.bench.cli import main
from genforecast.bench.data import GPU_DEMAND, PIPELINES
from genforecast.demo_data.cityscapes import write_cityscapes_sequences
from genforecast.demo_data.ucf101 import write_ucf101

TIMED = ("fashion_64", "ucf101", "s2s", "joint", "f2f_frames", "f2f_p3")


@pytest.fixture
def tiny_paper_root(tmp_path: Path, fashion_catalogue: Path) -> Path:
    """The paper root's layout with tiny data (unstamped folders are used as they are): enough training clips and
    snippets for one batch of 8 and of 4."""
    root = tmp_path / "paper"
    shutil.copytree(fashion_catalogue, root / "fashion_catalogue_256", ignore=shutil.ignore_patterns(".genforecast*"))
    write_ucf101(root / "UCF101", classes=2, groups=4, clips_per_group=2, frames=8, size=(32, 40))
    write_cityscapes_sequences(root / "cityscapes", sequences_per_split={"train": 4, "val": 1}, size=(32, 64),
                               frames_per_snippet=20)
    return root


def test_bench_data_prints_every_pipeline_with_cores_per_gpu(
    tiny_paper_root: Path, detector_weights: Path, segmenter_weights: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("F2F_DETECTOR", str(detector_weights))
    monkeypatch.setenv("CITYSCAPES_SEGMENTER", str(segmenter_weights))
    assert main(["data", "--root", str(tiny_paper_root), "--pipelines", *TIMED, "--scale", "8", "--batches", "2",
                 "--warmup", "1", "--workers", "0", "1", "--no-isolate"]) == 0
    output = capsys.readouterr().out
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in output.splitlines()
            if line.startswith("| ") and not line.startswith("| pipeline")]
    assert len(rows) == sum(len(GPU_DEMAND[name]) for name in TIMED)
    described = {PIPELINES[name].description for name in TIMED}
    for row in rows:
        (description, build_rate, build_wall, zero_workers, one_worker, size, peak, worker_peak, setting, demand,
         cores) = row
        assert description in described
        assert float(build_rate.replace(",", "")) > 0 and float(build_wall) >= 0
        single_core = float(zero_workers.replace(",", ""))
        assert single_core > 0 and float(one_worker.replace(",", "")) > 0
        assert float(size.replace(",", "")) > 0 and peak.endswith("GiB") and worker_peak.endswith("GiB")
        cores_value = float(cores.split()[0].replace(",", ""))
        assert cores_value == pytest.approx(float(demand.replace(",", "")) / single_core, rel=0.02, abs=0.01)
    assert "F2F P3 feature cache: memory-mapped reads at" in output


def test_read_blocks_equals_stacking_through_the_map(tmp_path: Path) -> None:
    """The file reads behind the F2F feature gather (``datamodules.cache.read_blocks``) give what ``np.stack`` over
    the memory map gives, for memory maps and plain arrays, into a fresh or a given array."""
    import numpy as np

    from datamodules.cache import read_array_cache, read_blocks, write_array_cache

    values = np.random.default_rng(0).standard_normal((3, 4, 5, 6)).astype(np.float16)
    write_array_cache(tmp_path / "cache.npz", {"other": np.arange(7), "values": values}, {"kind": "test"})
    mapped = read_array_cache(tmp_path / "cache.npz", mmap=True)[0]["values"]
    assert isinstance(mapped, np.memmap)
    blocks = [(2, 1), (0, 3), (2, 1), (1, 0)]
    expected = np.stack([values[block] for block in blocks])
    for source in (mapped, values):
        np.testing.assert_array_equal(read_blocks(source, blocks), expected)
        out = np.empty_like(expected)
        assert read_blocks(source, blocks, out=out) is out
        np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(read_blocks(mapped, [(1,)]), values[1:2])
    with pytest.raises(ValueError, match="out must be"):
        read_blocks(mapped, blocks, out=np.empty((4, 5, 7), dtype=np.float16))
