"""Atomic file writes: a crash leaves the old file or the complete new one, never a torn one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: Path, *, text: bool = False) -> Iterator[IO[Any]]:
    """Yield a handle on a temporary file beside ``path``; on success fsync it and rename it.

    The folder is fsynced after the rename too. On any error the temporary file is removed and
    ``path`` keeps what it held before.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o644)
    try:
        handle = os.fdopen(fd, "w", encoding="utf-8") if text else os.fdopen(fd, "wb")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
