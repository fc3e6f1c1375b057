"""Per-sample output files: their names, and writes that never leave a partial file behind."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

SAMPLE_PREFIX = "sample-"


def sample_path(folder: Path, index: int, suffix: str) -> Path:
    """``FOLDER/sample-000123.png`` for ``index`` 123 and ``suffix`` ``.png``."""
    return folder / f"{SAMPLE_PREFIX}{index:06d}{suffix}"


def file_indices(count: int, indices: int | Sequence[int]) -> list[int]:
    """The file index of each of ``count`` samples: consecutive from an int, or as given."""
    if isinstance(indices, int):
        return list(range(indices, indices + count))
    if len(indices) != count:
        raise ValueError(f"{count} samples but {len(indices)} file indices")
    return [int(index) for index in indices]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; renamed to ``path`` once the block succeeds.

    An interrupted write leaves no file under the final name, so a resumed run that skips
    existing files never keeps a truncated one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
