"""``ensure_demo_dataset`` writes a demo set once, marks it with a stamp, and rewrites stale or unmarked sets."""

import json
from pathlib import Path

import pytest

from genforecast.demo_data import cli
from genforecast.demo_data.cli import demo_stamp_path, ensure_demo_dataset


@pytest.fixture
def counting_writer(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []

    def write(root: Path, **parameters) -> Path:
        calls.append(parameters)
        (root / "frames").mkdir(parents=True)
        (root / "frames" / "0.txt").write_text(str(len(calls)))
        return root

    monkeypatch.setitem(cli.DATASETS, "toy", ("toy_set", write, {"size": 3}))
    return calls


def test_writes_once_then_reuses_the_stamped_set(tmp_path: Path, counting_writer: list[dict]):
    root = ensure_demo_dataset("toy", tmp_path)
    assert root == tmp_path / "toy_set" and counting_writer == [{"size": 3}]
    stamp = json.loads(demo_stamp_path("toy", tmp_path).read_text())
    assert stamp == {"dataset": "toy", "version": cli.DEMO_DATA_VERSION, "parameters": {"size": 3}}
    assert ensure_demo_dataset("toy", tmp_path) == root and len(counting_writer) == 1
    assert not list(tmp_path.glob("*.partial"))


def test_rewrites_a_set_from_another_version_or_without_stamp(tmp_path: Path, counting_writer: list[dict],
                                                              monkeypatch: pytest.MonkeyPatch):
    root = ensure_demo_dataset("toy", tmp_path)
    monkeypatch.setattr(cli, "DEMO_DATA_VERSION", cli.DEMO_DATA_VERSION + 1)
    ensure_demo_dataset("toy", tmp_path)
    assert len(counting_writer) == 2 and (root / "frames" / "0.txt").read_text() == "2"
    demo_stamp_path("toy", tmp_path).unlink()
    ensure_demo_dataset("toy", tmp_path)
    assert len(counting_writer) == 3 and demo_stamp_path("toy", tmp_path).is_file()


def test_force_rewrites_a_current_set(tmp_path: Path, counting_writer: list[dict]):
    ensure_demo_dataset("toy", tmp_path)
    ensure_demo_dataset("toy", tmp_path, force=True)
    assert len(counting_writer) == 2
