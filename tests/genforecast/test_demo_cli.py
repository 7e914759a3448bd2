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


@pytest.fixture
def recorded_writers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """Every dataset of every scale with its writer replaced by one that records (folder, parameters)."""
    calls: list[tuple[str, dict]] = []
    for datasets in cli.SCALES.values():
        for name, (folder, _, parameters) in list(datasets.items()):
            def write(root: Path, folder: str = folder, **kwargs) -> Path:
                calls.append((folder, kwargs))
                root.mkdir(parents=True)
                return root

            monkeypatch.setitem(datasets, name, (folder, write, parameters))
    return calls


def test_paper_scale_maps_to_the_writers_paper_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           recorded_writers: list[tuple[str, dict]]):
    """``--scale paper`` writes through the same writers: Cityscapes at 1024x2048 (30-frame snippets), UCF101 at
    240x320 with real lengths (25 fps is the writer's), catalogues at 256 and 512 px, under data/paper by default."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--scale", "paper"]) == 0
    written = dict(recorded_writers)
    assert written["cityscapes"]["size"] == (1024, 2048) and sum(written["cityscapes"]["sequences_per_split"].values())
    assert written["UCF101"]["size"] == (240, 320) and 100 <= written["UCF101"]["frames"] <= 500
    assert written["fashion_catalogue_256"]["size"] == 256 and written["fashion_catalogue_512"]["size"] == 512
    assert sorted(path.name for path in (tmp_path / "data" / "paper").iterdir() if not path.name.startswith(".")) \
        == sorted(written)
    assert demo_stamp_path("fashion_512", tmp_path / "data" / "paper", scale="paper").is_file()


def test_paper_scale_writers_accept_their_parameters() -> None:
    """The paper parameters are keyword arguments of the very writers the demo scale uses."""
    import inspect

    for name, (_, writer, parameters) in cli.PAPER_DATASETS.items():
        demo_writer = cli.DATASETS[name.split("_")[0]][1]
        assert writer is demo_writer
        assert set(parameters) <= set(inspect.signature(writer).parameters)


def test_demo_scale_stays_the_default_and_scales_check_their_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   recorded_writers: list[tuple[str, dict]]):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--only", "ucf101"]) == 0
    assert recorded_writers == [("UCF101", {})] and (tmp_path / "data" / "demo" / "UCF101").is_dir()
    with pytest.raises(SystemExit):
        cli.main(["--scale", "paper", "--only", "fashion"])
