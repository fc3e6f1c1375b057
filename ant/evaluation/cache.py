"""The evaluation cache: reference statistics and trained classifiers, keyed by content hashes.

The cache folder is ``$ANT_CACHE`` if set, else ``$XDG_CACHE_HOME/ant`` (``~/.cache/ant``).
Entries are keyed by the SHA-256 of what they were computed from, so a changed file gets a new
entry and an unchanged one is found again wherever it lives. Hashing a large data set takes a
while, so each file's digest is remembered (``file-hashes.json``) under its path, size and
modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ant.core.atomic import atomic_write
from ant.data.meta import META_NAME
from ant.data.shards import resolve_shards

CACHE_ENV = "ANT_CACHE"
HASHES_FILE = "file-hashes.json"
CHUNK = 1 << 20


def cache_dir() -> Path:
    """The cache folder (created on first use by the writers, not here)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "ant"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_write(path, text=True) as handle:
        handle.write(json.dumps(data, indent=2) + "\n")
    return path


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's content, remembered under its path, size and modification time."""
    path = path.resolve()
    stat = path.stat()
    memo_path = cache_dir() / HASHES_FILE
    memo = _read_json(memo_path)
    key = str(path)
    stamp = [stat.st_size, stat.st_mtime_ns]
    known = memo.get(key)
    if isinstance(known, dict) and known.get("stamp") == stamp:
        return str(known["sha256"])
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    memo[key] = {"stamp": stamp, "sha256": value}
    write_json(memo_path, memo)
    return value


def content_hash(files: Iterable[tuple[str, Path]], extra: Iterable[str] = ()) -> str:
    """One SHA-256 over ``(name, file content)`` pairs (in order) and ``extra`` strings."""
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(f"{name}\0{file_digest(path)}\n".encode())
    for text in extra:
        digest.update(f"{text}\n".encode())
    return digest.hexdigest()


def text_hash(*parts: object) -> str:
    """A SHA-256 of the ``repr`` of ``parts`` (settings, versions)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def shards_digest(spec: str) -> str:
    """A content hash of the shards ``spec`` names (and their meta.json, when there is one).

    Local shard files are hashed by content; remote URLs (``pipe:``, ``http:``) by their text.
    """
    files: list[tuple[str, Path]] = []
    remote: list[str] = []
    for url in resolve_shards(spec).urls:
        parsed = urlparse(url)
        if parsed.scheme in ("", "file"):
            local = Path(parsed.path if parsed.scheme else url).expanduser()
            files.append((local.name, local))
        else:
            remote.append(url)
    if files:
        meta = files[0][1].parent / META_NAME
        if meta.is_file():
            files.insert(0, (META_NAME, meta))
    return content_hash(files, remote)
