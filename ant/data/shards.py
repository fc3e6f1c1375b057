"""Finding shards (a packed folder, a brace pattern or any webdataset URL) and reading one shard."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import webdataset as wds

from ant.core.errors import AntError
from ant.data.meta import META_NAME, DatasetMeta, read_meta

# webdataset's pipe: streams fail with "<command args>: exit <status> (read) ...".
_PIPE_STATUS = re.compile(r": exit (\d+) \((?:read|write)\)")
SKIP_HINT = "set data.skip_corrupt=true to skip bad data"


@dataclass(frozen=True)
class ShardSet:
    """The shard URLs of a shard spec, with the metadata and sample count when known."""

    spec: str
    urls: list[str]
    meta: DatasetMeta | None
    count: int | None

    def expected_counts(self) -> list[int | None]:
        """The number of samples meta.json lists for each URL (None where unknown)."""
        if self.meta is None:
            return [None] * len(self.urls)
        counts = dict(zip(self.meta.shards, self.meta.shard_counts, strict=True))
        return [counts.get(PurePosixPath(url).name) for url in self.urls]


class ShardError(Exception):
    """A shard, or one sample of it, that cannot be read or decoded."""

    def __init__(self, url: str, reason: str, key: str | None = None) -> None:
        super().__init__(url, reason, key)
        self.url = url
        self.reason = reason
        self.key = key

    def message(self) -> str:
        """One line naming the shard (and sample), the reason and the way out."""
        what = f"sample '{self.key}' of shard" if self.key else "shard"
        return (
            f"corrupt or unreadable {what} {self.url} ({self.reason}): re-pack it, or {SKIP_HINT}"
        )


def describe_exception(exc: BaseException) -> str:
    """A short one-line reason for ``exc`` (webdataset appends streams and URLs to its args)."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    elif exc.args:
        text = str(exc.args[0]).split(" @ ")[0]
    else:
        text = ""
    text = " ".join(text.split())
    status = _PIPE_STATUS.search(text)
    if status:
        return f"the pipe command exited with status {status.group(1)}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def iter_shard(url: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard as webdataset dicts (``__key__``, ``__url__``, payloads).

    Any failure to open or parse the tar raises :class:`ShardError` naming ``url``.
    """
    try:
        yield from wds.tarfile_samples([{"url": url}])
    except Exception as exc:
        raise ShardError(url, describe_exception(exc)) from exc


def _local_path(url: str) -> Path | None:
    parsed = urlparse(url)
    if parsed.scheme == "":
        return Path(url).expanduser()
    if parsed.scheme == "file":
        return Path(parsed.path)
    return None


def _expand(spec: str) -> list[str]:
    try:
        urls: list[str] = wds.shardlists.expand_urls(spec)
    except (AssertionError, ValueError) as exc:
        raise AntError(f"cannot expand shard pattern '{spec}' ({exc}): fix the pattern") from None
    return urls


def _neighbour_meta(urls: list[str]) -> tuple[DatasetMeta | None, int | None]:
    paths = [_local_path(url) for url in urls]
    parents = {p.parent for p in paths if p is not None}
    if None in paths or len(parents) != 1:
        return None, None
    parent = parents.pop()
    if not (parent / META_NAME).is_file():
        return None, None
    meta = read_meta(parent)
    counts = dict(zip(meta.shards, meta.shard_counts, strict=True))
    names = [p.name for p in paths if p is not None]
    count = sum(counts[n] for n in names) if all(n in counts for n in names) else None
    return meta, count


def resolve_shards(spec: str) -> ShardSet:
    """The shards of ``spec``: a folder with meta.json, a brace pattern, or webdataset URLs.

    Local shard files must exist. For a pattern of local files, a meta.json in their folder
    supplies the metadata and the sample count.
    """
    if not spec:
        raise AntError(
            "no shards given: pass a packed folder or a pattern like shard-{000000..000009}.tar"
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        packed = read_meta(path)
        urls = [str(path / name) for name in packed.shards]
        missing = [url for url in urls if not Path(url).is_file()]
        if missing:
            raise AntError(
                f"shard '{missing[0]}' listed in {path / META_NAME} is missing "
                f"({len(missing)} missing): re-pack the data with --overwrite"
            )
        return ShardSet(spec, urls, packed, packed.count)
    urls = _expand(spec)
    for url in urls:
        local = _local_path(url)
        if local is not None and not local.is_file():
            what = "shard file" if len(urls) > 1 or local.suffix else "folder or shard file"
            raise AntError(
                f"{what} '{local}' does not exist: pass a packed folder, a shard pattern like "
                "shard-{000000..000009}.tar, or a URL"
            )
    meta, count = _neighbour_meta(urls)
    return ShardSet(spec, urls, meta, count)
