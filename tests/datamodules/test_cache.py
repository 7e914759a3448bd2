from __future__ import annotations

import zipfile

import numpy as np
import pytest

from datamodules import cache
from datamodules.cache import CacheError, read_array_cache, read_cache_meta, write_array_cache
from storage.files import atomic_write


def _arrays() -> dict[str, np.ndarray]:
    return {
        "images": np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4),
        "labels": np.array([3, -1], dtype=np.int64),
        "scores": np.asfortranarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)),
        "empty": np.zeros((0, 5), dtype=np.float64),
    }


@pytest.mark.parametrize("mmap", [False, True])
def test_round_trip_preserves_arrays_and_meta(tmp_path, mmap):
    path = tmp_path / "cache.npz"
    written = _arrays()
    write_array_cache(path, written, {"resolution": 4, "segmenter": "demo", "sizes": (1, 2)})

    arrays, meta = read_array_cache(path, expect_meta={"resolution": 4, "sizes": (1, 2)}, mmap=mmap)

    assert meta == {"resolution": 4, "segmenter": "demo", "sizes": [1, 2]}
    assert set(arrays) == set(written)
    for name, array in written.items():
        assert arrays[name].dtype == array.dtype
        np.testing.assert_array_equal(arrays[name], array)
    assert read_cache_meta(path) == meta


def _write_then_crash(file) -> None:
    file.write(b"partial contents")
    raise RuntimeError("simulated crash")


def test_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    path = tmp_path / "sub" / "cache.npz"

    with pytest.raises(RuntimeError, match="simulated crash"):
        atomic_write(path, _write_then_crash)
    assert list(path.parent.iterdir()) == []


def test_failed_rewrite_keeps_previous_cache(tmp_path):
    path = tmp_path / "cache.npz"
    write_array_cache(path, _arrays(), {"version": "old"})

    with pytest.raises(TypeError, match="JSON"):
        write_array_cache(path, _arrays(), {"bad": object()})
    with pytest.raises(RuntimeError, match="simulated crash"):
        atomic_write(path, _write_then_crash)

    assert read_cache_meta(path) == {"version": "old"}
    assert [entry.name for entry in tmp_path.iterdir()] == ["cache.npz"]


def test_missing_file_is_refused_with_its_path(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(CacheError, match="does not exist") as error:
        read_array_cache(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("mmap", [False, True])
def test_truncated_file_is_refused_with_its_path(tmp_path, mmap):
    path = tmp_path / "cache.npz"
    write_array_cache(path, _arrays(), {})
    path.write_bytes(path.read_bytes()[:-200])

    with pytest.raises(CacheError, match="truncated or corrupt") as error:
        read_array_cache(path, mmap=mmap)
    assert str(path) in str(error.value)


def test_corrupted_data_fails_the_crc_check(tmp_path):
    path = tmp_path / "cache.npz"
    write_array_cache(path, {"big": np.zeros(10_000, dtype=np.int64)}, {})
    contents = bytearray(path.read_bytes())
    contents[len(contents) // 2] ^= 0xFF
    path.write_bytes(bytes(contents))

    with pytest.raises(CacheError, match="CRC") as error:
        read_array_cache(path)
    assert str(path) in str(error.value)


def test_other_file_kinds_are_refused(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.zeros(3))

    with pytest.raises(CacheError, match="not a readable cache"):
        read_array_cache(garbage)
    with pytest.raises(CacheError, match="no cache metadata"):
        read_array_cache(plain)


def test_meta_mismatch_names_key_and_both_values(tmp_path):
    path = tmp_path / "cache.npz"
    write_array_cache(path, _arrays(), {"resolution": 64, "segmenter": "maskrcnn"})

    with pytest.raises(CacheError) as error:
        read_array_cache(path, expect_meta={"resolution": 64, "segmenter": "deeplab"})
    message = str(error.value)
    assert "'segmenter'" in message and "'maskrcnn'" in message and "'deeplab'" in message and str(path) in message

    with pytest.raises(CacheError, match="'resolution' is 64 but 128"):
        read_cache_meta(path, expect_meta={"resolution": 128})
    with pytest.raises(CacheError, match="no key 'clip_length'"):
        read_array_cache(path, expect_meta={"clip_length": 4})


def test_other_format_version_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "cache.npz"
    monkeypatch.setattr(cache, "CACHE_FORMAT_VERSION", 99)
    write_array_cache(path, _arrays(), {})
    monkeypatch.undo()

    with pytest.raises(CacheError, match="format version 99"):
        read_array_cache(path)


@pytest.mark.parametrize("mmap", [False, True])
def test_array_disagreeing_with_its_record_is_refused(tmp_path, mmap):
    path = tmp_path / "cache.npz"
    write_array_cache(path, {"x": np.zeros(3, dtype=np.float32)}, {})
    with zipfile.ZipFile(path) as archive:
        record = np.lib.format.read_array(archive.open("__cache_meta__.npy"))
    forged = tmp_path / "forged.npz"
    np.savez(forged, x=np.zeros(4, dtype=np.float32), __cache_meta__=record)

    with pytest.raises(CacheError, match="'x' has shape \\[4\\]") as error:
        read_array_cache(forged, mmap=mmap)
    assert str(forged) in str(error.value)


def test_invalid_contents_are_rejected_at_write(tmp_path):
    with pytest.raises(ValueError, match="object dtype"):
        write_array_cache(tmp_path / "a.npz", {"x": np.array([None, 1])}, {})
    with pytest.raises(ValueError, match="invalid cache array name"):
        write_array_cache(tmp_path / "b.npz", {"__cache_meta__": np.zeros(1)}, {})
    assert list(tmp_path.iterdir()) == []
