from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, name2label
from PIL import Image

from datamodules.cityscapes import index_sequences
from genforecast.demo_data.cityscapes import write_cityscapes_sequences
from genforecast.demo_data.cli import DATASETS, ensure_demo_dataset
from metrics.cityscapes_labels import INSTANCE_TRAIN_IDS, label_id_to_train_id_table

FRAME_NAME = re.compile(r"^(?P<city>[a-z]+)_(?P<sequence>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")
LABEL_NAME = re.compile(r"^(?P<city>[a-z]+)_(?P<sequence>\d{6})_(?P<frame>\d{6})_gtFine_"
                        r"(?P<kind>labelIds\.png|instanceIds\.png|color\.png|polygons\.json)$")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return write_cityscapes_sequences(tmp_path_factory.mktemp("demo") / "cityscapes",
                                      sequences_per_split={"train": 3, "val": 2}, size=(64, 128), seed=0)


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _annotated_frames(demo: Path, split: str = "train") -> list[tuple[str, int, int]]:
    matches = [LABEL_NAME.match(path.name) for path in sorted((demo / "gtFine" / split / "demoville").iterdir())]
    return sorted({(match["city"], int(match["sequence"]), int(match["frame"])) for match in matches})


def test_files_follow_the_cityscapes_naming_scheme(demo):
    assert sorted(path.name for path in demo.iterdir()) == ["gtFine", "gtFine_sequence", "leftImg8bit_sequence"]
    for split, count in (("train", 3), ("val", 2)):
        frames = sorted((demo / "leftImg8bit_sequence" / split / "demoville").iterdir())
        assert len(frames) == 30 * count and all(FRAME_NAME.match(path.name) for path in frames)
        labels = sorted((demo / "gtFine" / split / "demoville").iterdir())
        assert len(labels) == 4 * count and all(LABEL_NAME.match(path.name) for path in labels)
        annotated = _annotated_frames(demo, split)
        assert [sequence for _city, sequence, _frame in annotated] == list(range(count))
        for _city, sequence, frame in annotated:
            snippet = sorted(int(match["frame"]) for match in map(FRAME_NAME.match, (path.name for path in frames))
                             if int(match["sequence"]) == sequence)
            assert snippet == list(range(frame - 19, frame + 11))
        sequence_labels = sorted((demo / "gtFine_sequence" / split / "demoville").iterdir())
        assert len(sequence_labels) == 2 * 30 * count
    assert {frame for _city, _sequence, frame in _annotated_frames(demo)} == {19, 119}


def test_image_formats(demo):
    city, sequence, frame = _annotated_frames(demo)[0]
    stem = demo / "gtFine" / "train" / city / f"{city}_{sequence:06d}_{frame:06d}_gtFine"
    with Image.open(demo / "leftImg8bit_sequence" / "train" / city / f"{city}_000000_000000_leftImg8bit.png") as rgb:
        assert (rgb.mode, rgb.size) == ("RGB", (128, 64))
    with Image.open(f"{stem}_labelIds.png") as label_image:
        assert label_image.mode == "L"
    instances = _read(Path(f"{stem}_instanceIds.png"))
    assert instances.dtype == np.uint16 and instances.shape == (64, 128)
    with Image.open(f"{stem}_color.png") as colour_image:
        assert colour_image.mode == "RGBA"
        colour = np.asarray(colour_image)
    label_ids = _read(Path(f"{stem}_labelIds.png"))
    expected = np.array([id2label[value].color for value in label_ids.reshape(-1)]).reshape(64, 128, 3)
    assert (colour[..., :3] == expected).all()


def test_label_ids_are_cityscapes_ids_covering_street_and_moving_classes(demo):
    seen: set[int] = set()
    for city, sequence, frame in _annotated_frames(demo):
        label_ids = _read(demo / "gtFine" / "train" / city / f"{city}_{sequence:06d}_{frame:06d}_gtFine_labelIds.png")
        seen |= set(np.unique(label_ids).tolist())
    assert seen <= set(id2label)
    for name in ("road", "sidewalk", "building", "vegetation", "sky", "car", "person", "ego vehicle"):
        assert name2label[name].id in seen, name
    train_ids = set(label_id_to_train_id_table()[sorted(seen)].tolist())
    assert train_ids & set(INSTANCE_TRAIN_IDS)
    assert 255 in train_ids


def test_instance_ids_encode_label_and_index(demo):
    for city, sequence, frame in _annotated_frames(demo):
        stem = demo / "gtFine" / "train" / city / f"{city}_{sequence:06d}_{frame:06d}_gtFine"
        label_ids, instance_ids = _read(Path(f"{stem}_labelIds.png")), _read(Path(f"{stem}_instanceIds.png"))
        things = instance_ids >= 1000
        assert things.any()
        assert (instance_ids[things] // 1000 == label_ids[things]).all()
        assert all(id2label[value].hasInstances for value in np.unique(instance_ids[things] // 1000).tolist())
        assert (instance_ids[~things] == label_ids[~things]).all()
        assert not any(id2label[value].hasInstances for value in np.unique(label_ids[~things]).tolist())


def _centroids(instance_ids: np.ndarray) -> dict[int, tuple[np.ndarray, int]]:
    centroids = {}
    for value in np.unique(instance_ids[instance_ids >= 1000]).tolist():
        rows, columns = np.nonzero(instance_ids == value)
        centroids[value] = (np.array([rows.mean(), columns.mean()]), len(rows))
    return centroids


def test_instances_keep_their_ids_across_the_frames_of_a_snippet(demo):
    folder = demo / "gtFine_sequence" / "train" / "demoville"
    for _city, sequence, frame in _annotated_frames(demo):
        names = [f"demoville_{sequence:06d}_{number:06d}_gtFine_instanceIds.png"
                 for number in range(frame - 19, frame + 11)]
        tracks = [_centroids(_read(folder / name)) for name in names]
        lifetimes: dict[int, int] = {}
        for previous, current in zip(tracks, tracks[1:]):
            for value, (centre, area) in current.items():
                lifetimes[value] = lifetimes.get(value, 0) + 1
                if value in previous and min(area, previous[value][1]) >= 15:
                    assert np.abs(centre - previous[value][0]).max() < 0.2 * 128, (sequence, value)
        assert max(lifetimes.values()) >= 25
        annotated = _read(demo / "gtFine" / "train" / "demoville" / names[19])
        assert (annotated == _read(folder / names[19])).all()


def test_polygons_redraw_the_label_map(demo):
    city, sequence, frame = _annotated_frames(demo)[1]
    stem = demo / "gtFine" / "train" / city / f"{city}_{sequence:06d}_{frame:06d}_gtFine"
    polygons = json.loads(Path(f"{stem}_polygons.json").read_text())
    assert (polygons["imgHeight"], polygons["imgWidth"]) == (64, 128)
    labels = {entry["label"] for entry in polygons["objects"]}
    assert labels <= set(name2label) and {"car", "road", "sky"} <= labels
    redrawn = np.zeros((64, 128), dtype=np.uint8)
    for entry in polygons["objects"]:
        cv2.fillPoly(redrawn, [np.array(entry["polygon"], dtype=np.int32)], name2label[entry["label"]].id)
    assert (redrawn == _read(Path(f"{stem}_labelIds.png"))).mean() > 0.9


def test_frames_are_textured_and_move(demo):
    folder = demo / "leftImg8bit_sequence" / "train" / "demoville"
    frames = [_read(folder / f"demoville_000000_{number:06d}_leftImg8bit.png").astype(np.float64)
              for number in (0, 1, 19)]
    assert frames[0].std() > 20
    step, span = np.abs(frames[1] - frames[0]).mean(), np.abs(frames[2] - frames[0]).mean()
    assert 1 < step < span


def test_deterministic_given_the_seed(tmp_path):
    def write(name: str, seed: int) -> Path:
        return write_cityscapes_sequences(tmp_path / name, sequences_per_split={"val": 1}, size=(32, 64),
                                          frames_per_snippet=20, annotate_every_frame=False, seed=seed)

    first, second, other = write("a", 3), write("b", 3), write("c", 4)
    files = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
    assert len(files) == 20 + 4 and not (first / "gtFine_sequence").exists()
    assert all((first / name).read_bytes() == (second / name).read_bytes() for name in files)
    assert any((first / name).read_bytes() != (other / name).read_bytes() for name in files)
    with pytest.raises(ValueError, match="more than 19 frames"):
        write_cityscapes_sequences(tmp_path / "d", frames_per_snippet=19)


def test_registered_as_demo_dataset_that_the_data_module_indexes(tmp_path, monkeypatch):
    folder, writer, parameters = DATASETS["cityscapes"]
    assert writer is write_cityscapes_sequences and set(parameters["sequences_per_split"]) == {"train", "val"}
    small = {"sequences_per_split": {"train": 2, "val": 1}, "size": (32, 64)}
    monkeypatch.setitem(DATASETS, "cityscapes", (folder, writer, small))
    root = ensure_demo_dataset("cityscapes", tmp_path)
    assert root == tmp_path / folder
    for split, count in small["sequences_per_split"].items():
        samples, missing = index_sequences(root, split)
        assert len(samples) == count and not missing
    written = (root / "gtFine").stat().st_mtime_ns
    assert ensure_demo_dataset("cityscapes", tmp_path) == root  # stamped: reused, not rewritten
    assert (root / "gtFine").stat().st_mtime_ns == written
