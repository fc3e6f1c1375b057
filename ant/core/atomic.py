"""Files on disk: atomic writes, one-line disk errors, and weights-only loading of torch files.

A crash leaves the old file or the complete new one, never a torn one; a full or read-only
disk is one line naming the path, the bytes needed and the bytes free; a torch file that the
safe loader refuses is reported as refused, never with advice to load it unsafely.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ant.core.errors import AntError

DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
"""The ``errno`` values of a write that failed because of the disk, not the data."""

ACCESS_ERRORS = frozenset({errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR})
"""The ``errno`` values of a path that cannot be opened as asked (permissions, not a folder)."""

TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"
"""Temporary files of :func:`atomic_write` are ``.NAME.RANDOM.tmp`` beside their target."""


def free_bytes(path: Path) -> int | None:
    """The bytes free on the filesystem holding ``path`` (its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def size_text(count: int) -> str:
    """``512 B``, ``3.4 kB``, ``45.2 MB``, ``1.20 GB``.

    >>> size_text(512), size_text(3400), size_text(45_200_000), size_text(1_204_000_000)
    ('512 B', '3.4 kB', '45.2 MB', '1.20 GB')
    """
    if count < 1000:
        return f"{count} B"
    if count < 1_000_000:
        return f"{count / 1e3:.1f} kB"
    if count < 1_000_000_000:
        return f"{count / 1e6:.1f} MB"
    return f"{count / 1e9:.2f} GB"


def disk_error(
    path: Path, exc: OSError, needed: int | None = None, *, at_least: bool = False
) -> AntError:
    """The one-line error for a write of ``path`` that failed with ``exc``.

    For a disk error (:data:`DISK_ERRORS`) it names ``needed``, the size of what was being
    written (a lower bound when ``at_least``), and the bytes free there.
    """
    if exc.errno not in DISK_ERRORS:
        reason = exc.strerror or type(exc).__name__
        return AntError(f"cannot write {path}: {reason}; choose another path")
    reason, fix = {
        errno.ENOSPC: ("no space left on the device", "free space"),
        errno.EDQUOT: ("the disk quota is exceeded", "free space"),
        errno.EROFS: ("the file system is read-only", "make it writable"),
        errno.EFBIG: ("the file is larger than this process may write", "raise ulimit -f"),
    }[exc.errno]
    free = free_bytes(path)
    facts = (
        [] if needed is None else [f"needs {'at least ' if at_least else ''}{size_text(needed)}"]
    )
    facts += [] if free is None else [f"{size_text(free)} free there"]
    detail = f" ({', '.join(facts)})" if facts else ""
    return AntError(
        f"cannot write {path}: {reason}{detail}; {fix} or choose another directory (what was "
        "written before is intact)"
    )


class _Recording:
    """A binary handle for torch.save that keeps the disk error its ``write`` raised (torch
    turns it into a RuntimeError without errno)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self._handle.flush()


@contextmanager
def atomic_write(path: Path, *, text: bool = False, size: int | None = None) -> Iterator[IO[Any]]:
    """Yield a handle on a temporary file beside ``path``; on success fsync it and rename it.

    The folder is fsynced after the rename too. On any error the temporary file is removed and
    ``path`` keeps what it held before; a full, read-only or quota-limited disk becomes one
    :class:`AntError` naming ``path``, ``size`` (the expected bytes, if known) and the bytes
    free.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent
        )
    except OSError as exc:
        raise disk_error(path, exc, size) from None
    os.fchmod(fd, 0o644)
    try:
        handle = os.fdopen(fd, "w", encoding="utf-8") if text else os.fdopen(fd, "wb")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        written = _size(Path(tmp))
        Path(tmp).unlink(missing_ok=True)
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        if isinstance(cause, OSError) and cause.errno in DISK_ERRORS:
            if size is not None and size > written:
                raise disk_error(path, cause, size) from None
            raise disk_error(path, cause, written, at_least=True) from None
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def torch_save(obj: Any, path: Path, size: int | None = None) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write` (``size``: expected bytes)."""
    import torch

    with atomic_write(path, size=size) as handle:
        recording = _Recording(handle)
        try:
            torch.save(obj, recording)  # type: ignore[arg-type]
        except RuntimeError as exc:
            if recording.error is None:
                raise
            raise RuntimeError(str(exc)) from recording.error
    return path


def remove_stale_temporaries(folder: Path) -> tuple[int, int]:
    """Delete the temporary files that interrupted :func:`atomic_write` calls left under
    ``folder`` (a kill -9 mid-write); returns their number and bytes. Only safe while no other
    process writes there."""
    count = total = 0
    for path in sorted(folder.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}")):
        if path.is_file() and path.name.startswith(TEMP_PREFIX):
            total += _size(path)
            path.unlink(missing_ok=True)
            count += 1
    return count, total


def load_torch_file(path: Path, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; failures become one line about ``what``.

    Content the safe loader refuses (code to run, unknown classes, garbage) is reported as
    refused, corrupt or tampered with; a truncated or foreign archive as corrupt.
    """
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise AntError(
            f"refused to load {path}: it holds content other than plain weights, which ant's "
            f"safe loader will not run, so it is corrupt or was tampered with; use a {what} you "
            "trust"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AntError(f"{path} is corrupt or not a {what} ({first[:160]})") from None
