"""One trainer per run directory: an exclusive lock, and a clean slate for a resumed run.

Rank 0 holds ``RUN/trainer.lock`` (``flock``) for the life of the run, with its PID, host and
start time in the file. A second trainer on the same directory gets one line naming the holder.
The kernel drops the lock of a dead process; the next trainer takes it over and says whose it
was. Under the lock, the temporary files that a kill -9 left mid-write are removed. A run that
is refused before it writes anything leaves no directory behind.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ant.core.atomic import disk_error, remove_stale_temporaries, size_text
from ant.core.errors import AntError

LOCK_FILE = "trainer.lock"

logger = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return True


def _holder(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    since = f" since {holder['started']}" if "started" in holder else ""
    return f"PID {pid} on {host}{since}"


class RunLock:
    """The exclusive lock of a run directory (a context manager; see the module docstring)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._handle: IO[str] | None = None
        self._created = False

    def __enter__(self) -> RunLock:
        self._created = not self.path.parent.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise disk_error(self.path, exc) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _holder(handle.read())
            handle.close()
            pid = holder.get("pid", "PID")
            raise AntError(
                f"{self.path.parent} is in use by another trainer ({_describe(holder)}): wait "
                f"for it, stop it (kill -TERM {pid}), or pass --run-dir for a new run"
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            handle.seek(0)
            holder = _holder(handle.read())
            if holder.get("host") == socket.gethostname() and _alive(int(holder.get("pid", 0))):
                handle.close()
                raise AntError(
                    f"{self.path.parent} is in use by another trainer ({_describe(holder)}): "
                    "wait for it, or pass --run-dir for a new run"
                ) from None
        handle.seek(0)
        previous = _holder(handle.read())
        if previous:
            logger.warning(
                "took over the lock of %s, which is no longer running", _describe(previous)
            )
        handle.seek(0)
        handle.truncate()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        handle.write(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": stamp})
        )
        handle.flush()
        self._handle = handle
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        handle.seek(0)
        handle.truncate()
        handle.flush()
        if self._created and [p.name for p in self.path.parent.iterdir()] == [LOCK_FILE]:
            # A run refused before it wrote anything leaves no directory behind.
            self.path.unlink()
            self.path.parent.rmdir()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def clean_leftovers(run_dir: Path) -> None:
    """Remove the temporary files of interrupted writes under ``run_dir`` (hold the lock)."""
    if not run_dir.is_dir():
        return
    count, total = remove_stale_temporaries(run_dir)
    if count:
        logger.warning(
            "removed %d temporary file(s) (%s) that an interrupted write left in %s",
            count,
            size_text(total),
            run_dir,
        )
