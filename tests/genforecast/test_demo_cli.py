"""``ensure_demo_dataset`` writes a demo set once, marks it with a stamp, rewrites stale sets, keeps unmarked ones."""

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


def test_rewrites_a_set_written_by_another_version(tmp_path: Path, counting_writer: list[dict],
                                                    monkeypatch: pytest.MonkeyPatch):
    root = ensure_demo_dataset("toy", tmp_path)
    monkeypatch.setattr(cli, "DEMO_DATA_VERSION", cli.DEMO_DATA_VERSION + 1)
    ensure_demo_dataset("toy", tmp_path)
    assert len(counting_writer) == 2 and (root / "frames" / "0.txt").read_text() == "2"
    assert json.loads(demo_stamp_path("toy", tmp_path).read_text())["version"] == cli.DEMO_DATA_VERSION


def test_keeps_an_unstamped_folder_and_says_how_to_rewrite_it(tmp_path: Path, counting_writer: list[dict],
                                                             caplog: pytest.LogCaptureFixture):
    (tmp_path / "toy_set").mkdir()
    (tmp_path / "toy_set" / "mine.txt").write_text("not generated")
    assert ensure_demo_dataset("toy", tmp_path) == tmp_path / "toy_set"
    assert counting_writer == [] and (tmp_path / "toy_set" / "mine.txt").is_file()
    assert "--only toy --force" in caplog.text


def test_force_rewrites_a_current_set(tmp_path: Path, counting_writer: list[dict]):
    ensure_demo_dataset("toy", tmp_path)
    ensure_demo_dataset("toy", tmp_path, force=True)
    assert len(counting_writer) == 2
