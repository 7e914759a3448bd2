"""Atomic, self-describing array caches shared by every dataset of the suite.

Raw data (images, video clips, segmentation scores) is converted once into a single uncompressed ``.npz`` file
that training reads quickly, possibly memory-mapped. Each cache carries a metadata record: the format version,
the shape and dtype of every array, and free-form JSON metadata describing how the cache was made (resolution,
source fingerprint, segmenter, ...). Readers pass the metadata they expect, so a cache made with other settings is
refused with a message naming the differing key instead of silently feeding the wrong data to a model.

Writes are atomic (:func:`storage.files.atomic_write`), so an interrupted conversion never leaves a partial cache
under the final name.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from storage.files import atomic_write

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
_META_NAME = "__cache_meta__"
_ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_ZIP_LOCAL_SIGNATURE = b"PK\x03\x04"


class CacheError(RuntimeError):
    """A cache file is missing, damaged, of another format, or was made with other settings."""


def write_array_cache(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write ``arrays`` and the JSON-serialisable ``meta`` atomically into one uncompressed ``.npz`` file.

    The stored record holds ``meta``, the cache format version and each array's shape and dtype, which
    :func:`read_array_cache` checks when loading. Object arrays are refused: caches never need unpickling.
    """
    if not arrays:
        raise ValueError("a cache needs at least one array")
    contents = {}
    for name, array in arrays.items():
        if not name or name == _META_NAME or "/" in name:
            raise ValueError(f"invalid cache array name {name!r}")
        array = np.asarray(array)
        if array.dtype.hasobject:
            raise ValueError(f"cache array {name!r} has object dtype; only plain numeric arrays can be cached")
        contents[name] = array
    try:
        meta_json = json.dumps(dict(meta))
    except TypeError as error:
        raise TypeError(f"cache meta must be JSON-serialisable: {error}") from error
    record = {
        "format_version": CACHE_FORMAT_VERSION,
        "meta": json.loads(meta_json),
        "arrays": {name: {"shape": list(array.shape), "dtype": array.dtype.str} for name, array in contents.items()},
    }
    contents[_META_NAME] = np.frombuffer(json.dumps(record).encode("utf-8"), dtype=np.uint8)
    return atomic_write(path, lambda file: np.savez(file, **contents))


def read_cache_meta(path: str | os.PathLike, expect_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the metadata stored in a cache without loading its arrays (cheap staleness checks).

    Raises :class:`CacheError` if the file is missing or not a readable cache of this format version, or if a key
    of ``expect_meta`` is absent from or differs from the stored metadata.
    """
    path = Path(path)
    with _open_cache_zip(path) as archive:
        record = _read_record(path, archive)
    _check_expected_meta(path, record["meta"], expect_meta)
    return record["meta"]


def read_array_cache(path: str | os.PathLike, expect_meta: Mapping[str, Any] | None = None,
                     mmap: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load a cache written by :func:`write_array_cache`, returning ``(arrays, meta)``.

    Every problem raises :class:`CacheError` naming the path and the reason: missing file, truncated or corrupt
    archive (bad zip structure or CRC), another format version, ``expect_meta`` disagreeing with the stored
    metadata (the message names the key and both values), or arrays that do not match their recorded shapes and
    dtypes. With ``mmap=True`` arrays are read-only memory maps into the file; the archive structure and array
    extents are checked but, to avoid reading the whole file, the data CRCs are not.
    """
    path = Path(path)
    with _open_cache_zip(path) as archive:
        record = _read_record(path, archive)
        _check_expected_meta(path, record["meta"], expect_meta)
        expected_members = {f"{name}.npy" for name in record["arrays"]} | {f"{_META_NAME}.npy"}
        stored_members = set(archive.namelist())
        if stored_members != expected_members:
            raise CacheError(f"{path}: cache members {sorted(stored_members)} do not match the recorded arrays "
                             f"{sorted(expected_members)}")
        arrays = {}
        for name in record["arrays"]:
            member = archive.getinfo(f"{name}.npy")
            try:
                arrays[name] = _map_member(path, member) if mmap else _read_member(archive, member)
            except (zipfile.BadZipFile, ValueError, EOFError, OSError) as error:
                raise CacheError(f"{path}: array {name!r} is unreadable (truncated or corrupt file): {error}") from error
    for name, spec in record["arrays"].items():
        array = arrays[name]
        if list(array.shape) != spec["shape"] or array.dtype.str != spec["dtype"]:
            raise CacheError(f"{path}: array {name!r} has shape {list(array.shape)} and dtype {array.dtype.str}, "
                             f"but the cache records shape {spec['shape']} and dtype {spec['dtype']}")
    return arrays, record["meta"]


def _open_cache_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise CacheError(f"{path}: cache file does not exist")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CacheError(f"{path}: not a readable cache archive (truncated or corrupt file): {error}") from error


def _read_record(path: Path, archive: zipfile.ZipFile) -> dict[str, Any]:
    try:
        member = archive.getinfo(f"{_META_NAME}.npy")
    except KeyError:
        raise CacheError(f"{path}: no cache metadata record; the file was not written by write_array_cache") from None
    try:
        record = json.loads(_read_member(archive, member).tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as error:
        raise CacheError(f"{path}: cache metadata record is unreadable (truncated or corrupt file): {error}") from error
    version = record.get("format_version") if isinstance(record, dict) else None
    if version != CACHE_FORMAT_VERSION:
        raise CacheError(f"{path}: cache format version {version!r} is not the supported version "
                         f"{CACHE_FORMAT_VERSION}; rebuild the cache")
    return record


def _check_expected_meta(path: Path, stored: dict[str, Any], expect_meta: Mapping[str, Any] | None) -> None:
    if not expect_meta:
        return
    expected = json.loads(json.dumps(dict(expect_meta)))
    for key, value in expected.items():
        if key not in stored:
            raise CacheError(f"{path}: cache meta has no key {key!r} (expected {value!r}); it was made by other code")
        if stored[key] != value:
            raise CacheError(f"{path}: cache meta {key!r} is {stored[key]!r} but {value!r} was expected; the cache "
                             "was made with other settings")


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> np.ndarray:
    """Read one ``.npy`` member fully; reading to the end makes ``zipfile`` verify its CRC."""
    with archive.open(member) as stream:
        array = np.lib.format.read_array(stream, allow_pickle=False)
        if stream.read(1):
            raise ValueError("trailing bytes after the array data")
    return array


def _map_member(path: Path, member: zipfile.ZipInfo) -> np.ndarray:
    """Memory-map one stored (uncompressed) ``.npy`` member in place."""
    if member.compress_type != zipfile.ZIP_STORED:
        raise ValueError("member is compressed and cannot be memory-mapped")
    with path.open("rb") as file:
        file.seek(member.header_offset)
        header = file.read(_ZIP_LOCAL_HEADER.size)
        if len(header) != _ZIP_LOCAL_HEADER.size or header[:4] != _ZIP_LOCAL_SIGNATURE:
            raise ValueError("bad local zip header")
        fields = _ZIP_LOCAL_HEADER.unpack(header)
        member_start = member.header_offset + _ZIP_LOCAL_HEADER.size + fields[10] + fields[11]
        file.seek(member_start)
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(file)
        data_offset = file.tell()
    data_size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if data_offset + data_size > member_start + member.file_size or data_offset + data_size > path.stat().st_size:
        raise ValueError("array data extends past the end of its member")
    if dtype.hasobject:
        raise ValueError("object arrays are not supported")
    if data_size == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran_order else "C",
                     offset=data_offset)


def read_blocks(array: np.ndarray, blocks: Sequence[tuple[int, ...]], out: np.ndarray | None = None) -> np.ndarray:
    """``np.stack([array[block] for block in blocks])``, each block a tuple of leading indices (one sample's frame,
    say) selecting a contiguous sub-array; written into ``out`` when given (shape ``(len(blocks), *tail)``).

    From a C-ordered memory map of a cache file the blocks are read with ``os.preadv`` straight into the result: the
    kernel copies each block in one call, about twice the rate of copying through the map, which faults every 4 KiB
    page in (2.8 against 1.5 GiB/s reading P3 features, ``genforecast bench data``). Other arrays are copied as
    ``np.stack`` would.
    """
    depth = len(blocks[0]) if blocks else 0
    tail = array.shape[depth:]
    if out is None:
        out = np.empty((len(blocks), *tail), dtype=array.dtype)
    if out.shape != (len(blocks), *tail) or out.dtype != array.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {array.dtype} array of shape {(len(blocks), *tail)}")
    if not blocks:
        return out
    direct = (isinstance(array, np.memmap) and array.filename is not None and array.flags.c_contiguous
              and hasattr(os, "preadv"))
    if not direct:
        for position, block in enumerate(blocks):
            out[position] = array[block]
        return out
    block_bytes = out[0].nbytes
    flat = np.ravel_multi_index(tuple(np.asarray(blocks).T), array.shape[:depth])
    with open(array.filename, "rb", buffering=0) as file:
        for position, index in enumerate(flat.tolist()):
            view, start, done = memoryview(out[position]).cast("B"), array.offset + index * block_bytes, 0
            while done < block_bytes:
                read = os.preadv(file.fileno(), [view[done:]], start + done)
                if read == 0:
                    raise CacheError(f"{array.filename} ends inside a cached array")
                done += read
    return out


def gather_windows(located: Sequence[tuple[np.ndarray, int]], frame_positions: np.ndarray | None,
                   windows: Sequence[tuple[int, int]] | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """``np.stack([array[index, frame_positions, ..., top:top + h, left:left + w] for (array, index), (top, left) in
    zip(located, windows)])``: the samples of a batch, each a row of a cached array, cropped to ``size`` = (h, w).

    ``frame_positions`` None takes per-sample arrays ``array[index, ..., crop]``. With ``windows`` None the frames are
    whole, read straight from the cache files (:func:`read_blocks`, twice the rate of copying through the maps).
    """
    first = located[0][0]
    per_frame = frame_positions is not None
    height, width = first.shape[-2:] if windows is None else size
    frames = (len(frame_positions),) if per_frame else ()
    out = np.empty((len(located), *frames, *first.shape[1 + per_frame:-2], height, width), dtype=first.dtype)
    for sample, (array, index) in enumerate(located):
        if windows is None:
            blocks = [(index, int(position)) for position in frame_positions] if per_frame else [(index,)]
            read_blocks(array, blocks, out=out[sample] if per_frame else out[sample:sample + 1])
            continue
        top, left = windows[sample]
        rows, columns = slice(top, top + height), slice(left, left + width)
        if per_frame:
            out[sample] = array[index, frame_positions, ..., rows, columns]
        else:
            out[sample] = array[index, ..., rows, columns]
    return out


class MappedArrayCache:
    """A cache memory-mapped on first use; pickled without its arrays, so each worker process maps it anew.

    ``arrays()`` returns the read-only memory maps, checked against ``expect_meta`` (see :func:`read_array_cache`).
    """

    def __init__(self, path: str | os.PathLike, expect_meta: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.expect_meta = dict(expect_meta)
        self._arrays: dict[str, np.ndarray] | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays, _meta = read_array_cache(self.path, self.expect_meta, mmap=True)
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state


MANIFEST_NAME = "manifest.npz"
"""The file a sharded cache writes last: its presence (with matching metadata) marks a finished extraction."""
SHARD_NAME_PATTERN = re.compile(r"shard_(\d{5})\.npz")
"""Names of shard files; temporary files (``.<name>.<random>.tmp``) never match it, so a half-written shard is never
read."""
Stale = Literal["refuse", "rebuild"]


class Shard(NamedTuple):
    """What a shard holds: ``arrays`` (their leading axis runs over the shard's rows, as many as its samples give)
    and ``notes``, JSON facts found while computing it (e.g. the inputs it skipped), kept in its metadata and
    collected into the manifest's ``shard_notes``."""

    arrays: Mapping[str, np.ndarray]
    notes: Mapping[str, Any] = {}


def shard_path(cache_path: str | os.PathLike, shard: int) -> Path:
    """File of shard number ``shard`` of the sharded cache directory ``cache_path``."""
    return Path(cache_path) / f"shard_{shard:05d}.npz"


def _shard_bounds(num_samples: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(num_samples, start + shard_size)) for start in range(0, num_samples, shard_size)]


def manifest_meta(meta: Mapping[str, Any], num_samples: int, shard_size: int,
                  samples_meta: Callable[[int, int], Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The metadata the manifest of a sharded cache of ``num_samples`` samples in shards of ``shard_size`` must match:
    ``meta``, the layout, and ``samples_meta(start, stop)`` of each shard when given (``shard_meta``)."""
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    bounds = _shard_bounds(num_samples, shard_size)
    layout = {"num_samples": num_samples, "shard_size": shard_size, "num_shards": len(bounds)}
    if samples_meta is not None:
        layout["shard_meta"] = [dict(samples_meta(start, stop)) for start, stop in bounds]
    return {**meta, **layout}


def _expected_shard_meta(meta: Mapping[str, Any], manifest: Mapping[str, Any], shard: int) -> dict[str, Any]:
    start, stop = _shard_bounds(manifest["num_samples"], manifest["shard_size"])[shard]
    extra = manifest["shard_meta"][shard] if "shard_meta" in manifest else {}
    return {**meta, "shard": shard, "start": start, "stop": stop, **extra}


def sharded_cache_complete(cache_path: str | os.PathLike, meta: Mapping[str, Any]) -> bool:
    """Whether ``cache_path`` holds a finished sharded extraction for ``meta``: ``False`` without a manifest.

    A manifest made with other settings raises :class:`CacheError` naming the key and both values.
    """
    manifest = Path(cache_path) / MANIFEST_NAME
    if not manifest.is_file():
        return False
    read_cache_meta(manifest, meta)
    return True


def write_sharded_cache(cache_path: str | os.PathLike, meta: Mapping[str, Any], num_samples: int, shard_size: int,
                        compute_shard: Callable[[int, int], Shard], description: str, *,
                        samples_meta: Callable[[int, int], Mapping[str, Any]] | None = None,
                        stale: Stale = "refuse") -> dict[str, Any]:
    """Fill the directory ``cache_path`` with ``compute_shard(start, stop)`` for samples ``[start, stop)`` per shard;
    return the manifest's metadata.

    Shards of ``shard_size`` samples are written atomically one at a time (``shard_00000.npz`` ...; metadata: ``meta``
    plus shard/start/stop, ``samples_meta(start, stop)`` when given, and the shard's ``notes``), then the manifest:
    ``shard_stops`` int64, each shard's cumulative row count, and :func:`manifest_meta` plus ``num_rows`` and
    ``shard_notes``. A finished extraction returns at once; an interrupted one keeps its finished shards and computes
    only the others; shard files beyond the last shard are removed. A shard or manifest made with other metadata
    raises :class:`CacheError` before anything is computed over it (``stale="refuse"``, for caches whose directory
    name says what they hold; a finished one is trusted without opening its shards) or is recomputed
    (``stale="rebuild"``, for a directory reused across settings: every call re-checks each shard, even of a finished
    cache); a damaged shard is recomputed either way.
    """
    cache_path = Path(cache_path)
    expected_manifest = manifest_meta(meta, num_samples, shard_size, samples_meta)
    try:
        finished = read_cache_meta(cache_path / MANIFEST_NAME, expected_manifest)
    except CacheError as error:
        if stale == "refuse" and (cache_path / MANIFEST_NAME).is_file():
            raise
        log.info("%s: %s", description, error)
        finished = None
    if finished is not None and stale == "refuse":
        return finished
    stops, notes, computed = [], [], False
    for shard, (start, stop) in enumerate(_shard_bounds(num_samples, shard_size)):
        path, expected = shard_path(cache_path, shard), _expected_shard_meta(meta, expected_manifest, shard)
        stored = _valid_shard(path, expected, stale)
        if stored is None:
            contents = compute_shard(start, stop)
            write_array_cache(path, contents.arrays, {**expected, "notes": dict(contents.notes)})
            stored, computed = (len(next(iter(contents.arrays.values()))), dict(contents.notes)), True
            log.info("%s: shard %d/%d (samples %d-%d, %d rows) written to %s", description, shard + 1,
                     expected_manifest["num_shards"], start, stop - 1, stored[0], path)
        stops.append((stops[-1] if stops else 0) + stored[0])
        notes.append(stored[1])
    for path in cache_path.iterdir():
        match = SHARD_NAME_PATTERN.fullmatch(path.name)
        if match and int(match.group(1)) >= expected_manifest["num_shards"]:
            path.unlink()
    if finished is not None and not computed:
        return finished
    final = {**expected_manifest, "num_rows": stops[-1] if stops else 0, "shard_notes": notes}
    write_array_cache(cache_path / MANIFEST_NAME, {"shard_stops": np.asarray(stops, dtype=np.int64)}, final)
    return final


def _valid_shard(path: Path, expected: Mapping[str, Any], stale: Stale) -> tuple[int, dict[str, Any]] | None:
    """``(rows, notes)`` of a finished shard matching ``expected``; None when it is missing or must be recomputed."""
    if not path.is_file():
        return None
    try:
        stored = read_cache_meta(path, expected)
    except CacheError as error:
        if stale == "refuse" and _readable(path):
            raise
        log.info("recomputing %s (%s)", path, error)
        return None
    try:
        arrays, _meta = read_array_cache(path, expected, mmap=True)
    except CacheError as error:
        log.info("recomputing %s (%s)", path, error)
        return None
    return len(next(iter(arrays.values()))), stored.get("notes", {})


def _readable(path: Path) -> bool:
    try:
        read_cache_meta(path)
    except CacheError:
        return False
    return True


class ShardedArrayCache:
    """The memory-mapped shards of one finished :func:`write_sharded_cache` extraction, checked against
    ``expect_meta`` (and the manifest against ``expect_manifest`` too, e.g. :func:`manifest_meta` of the samples);
    like :class:`MappedArrayCache` they are mapped on first use and anew in each worker process.

    Rows are numbered across shards: ``locate(row)`` gives the ``(shard arrays, offset)`` holding it.
    """

    def __init__(self, cache_path: str | os.PathLike, expect_meta: Mapping[str, Any],
                 expect_manifest: Mapping[str, Any] | None = None) -> None:
        self.cache_path = Path(cache_path)
        self.expect_meta = dict(expect_meta)
        arrays, self.manifest_meta = read_array_cache(self.cache_path / MANIFEST_NAME,
                                                      {**self.expect_meta, **(expect_manifest or {})})
        self.shard_stops = arrays["shard_stops"]
        self._shards: list[dict[str, np.ndarray]] | None = None

    def shards(self) -> list[dict[str, np.ndarray]]:
        """Every shard's arrays (memory maps), each checked against its expected metadata."""
        if self._shards is None:
            shards, start = [], 0
            for shard, stop in enumerate(self.shard_stops.tolist()):
                path = shard_path(self.cache_path, shard)
                expected = _expected_shard_meta(self.expect_meta, self.manifest_meta, shard)
                arrays, _meta = read_array_cache(path, expected, mmap=True)
                rows = len(next(iter(arrays.values())))
                if rows != stop - start:
                    raise CacheError(f"{path}: {rows} rows but the manifest records {stop - start}; rebuild the cache")
                shards.append(arrays)
                start = stop
            self._shards = shards
        return self._shards

    def locate(self, row: int) -> tuple[dict[str, np.ndarray], int]:
        shard = int(np.searchsorted(self.shard_stops, row, side="right"))
        return self.shards()[shard], int(row) - (int(self.shard_stops[shard - 1]) if shard else 0)

    def gather(self, indices: np.ndarray, frame_positions: np.ndarray, windows: Sequence[tuple[int, int]] | None = None,
               size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """Every array of per-frame rows (rows, frames, ..., H, W) gathered at the rows ``indices`` and
        ``frame_positions`` by :func:`gather_windows` (whole frames when ``windows`` is None)."""
        located = [self.locate(index) for index in np.asarray(indices).tolist()]
        return {name: gather_windows([(arrays[name], offset) for arrays, offset in located], frame_positions,
                                     windows, size)
                for name in located[0][0]}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_shards"] = None
        return state

    def __len__(self) -> int:
        return int(self.shard_stops[-1]) if len(self.shard_stops) else 0
