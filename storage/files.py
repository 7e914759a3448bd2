"""Atomic file creation: a file exists under its final name complete, or not at all.

Every file the suite writes for a later reader (caches, exported weights, run manifests) goes through
:func:`atomic_write`, so a process killed mid-write never leaves a truncated file that looks finished.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: str | os.PathLike, write_fn: Callable[[IO[bytes]], None]) -> Path:
    """Create ``path`` atomically: ``write_fn`` fills a temporary file that is fsynced and renamed into place.

    The temporary file lives in the destination directory (a rename within one file system is atomic) and is
    removed if ``write_fn`` raises, so neither a partial file under the final name nor a stray temporary is left.
    Missing parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as temp_file:
            write_fn(temp_file)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    """Persist a rename on POSIX file systems; a no-op where directories cannot be opened (Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
