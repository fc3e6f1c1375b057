"""Per-sample output files: their names, and the sample indices a file list stands for."""

from __future__ import annotations

from collections.abc import Sequence
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
