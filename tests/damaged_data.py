"""Demo data damaged the way real data goes wrong: a video cut short by an interrupted download, missing frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from datamodules.cityscapes import ANNOTATED_INDEX, frame_file_name
from genforecast.demo_data.cityscapes import annotated_frame_number


def write_truncated_copy(source: str | Path, target: str | Path, keep_fraction: float = 0.5) -> Path:
    """Copy the first ``keep_fraction`` of a file's bytes, like an interrupted download."""
    data = Path(source).read_bytes()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data[:int(len(data) * keep_fraction)])
    return target


def delete_sequence_frames(root: str | Path, split: str, snippet_indices: Sequence[int] = (10,),
                           snippets: Sequence[int] = (0,), city: str = "demoville") -> list[str]:
    """Delete ``leftImg8bit_sequence`` frames (by snippet index) of the given snippets of a demo Cityscapes set;
    returns the deleted names."""
    deleted = []
    for snippet in snippets:
        first = annotated_frame_number(snippet) - ANNOTATED_INDEX
        for index in snippet_indices:
            name = frame_file_name(city, snippet, first + index)
            (Path(root) / "leftImg8bit_sequence" / split / city / name).unlink()
            deleted.append(name)
    return deleted
