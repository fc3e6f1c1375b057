"""Writing WebDataset shards: an atomic shard sink, the output folder, and latent arrays."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import webdataset as wds

from ant.core.errors import AntError
from ant.data.meta import META_NAME, SHARD_PREFIX, DatasetMeta, shard_name, write_meta

PARTIAL_SUFFIX = ".partial"


def sample_key(index: int) -> str:
    """The ``__key__`` of sample ``index``: the zero-padded index."""
    return f"{index:08d}"


def prepare_output(out: Path, overwrite: bool) -> None:
    """Create ``out``; a non-empty ``out`` is an error unless ``overwrite``.

    With ``overwrite`` only what a pack writes (shards, partial files, meta.json) is removed.
    """
    if out.exists() and not out.is_dir():
        raise AntError(f"output '{out}' is a file, not a folder: choose a folder for the shards")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise AntError(
                f"output folder '{out}' is not empty: pass --overwrite to replace its shards, "
                "or choose another folder"
            )
        for path in out.iterdir():
            ours = path.name.startswith(SHARD_PREFIX) or path.name.startswith(META_NAME)
            if path.is_file() and ours:
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


class ShardSink:
    """Writes samples into numbered tar shards of at most ``shard_size`` samples.

    Each shard is written as ``shard-NNNNNN.tar.partial`` and renamed to ``shard-NNNNNN.tar``
    only once complete, so an interrupted write never leaves a shard that looks finished. Use it
    as a context manager: leaving with an exception deletes the partial shard.
    """

    def __init__(self, out: Path, shard_size: int) -> None:
        if shard_size < 1:
            raise AntError(f"shard size must be at least 1 sample, got {shard_size}")
        self.out = out
        self.shard_size = shard_size
        self.shards: list[str] = []
        self.counts: list[int] = []
        self._writer: wds.TarWriter | None = None
        self._partial: Path | None = None

    def write(self, sample: dict[str, str | bytes]) -> None:
        """Add one sample: ``__key__`` (str) and payloads (bytes) keyed by extension."""
        if self._writer is None or self.counts[-1] >= self.shard_size:
            self._finish_shard()
            self._open_shard()
        assert self._writer is not None
        self._writer.write(sample)
        self.counts[-1] += 1

    def _open_shard(self) -> None:
        name = shard_name(len(self.shards))
        self._partial = self.out / (name + PARTIAL_SUFFIX)
        self._writer = wds.TarWriter(str(self._partial), encoder=False, compress=False, mtime=0)
        self.shards.append(name)
        self.counts.append(0)

    def _finish_shard(self) -> None:
        if self._writer is None or self._partial is None:
            return
        self._writer.close()
        os.replace(self._partial, self.out / self.shards[-1])
        self._writer = None
        self._partial = None

    def close(self) -> None:
        """Finish the last shard."""
        self._finish_shard()

    def abort(self) -> None:
        """Drop the shard being written."""
        if self._writer is not None:
            self._writer.close()
        if self._partial is not None:
            self._partial.unlink(missing_ok=True)
        self._writer = None
        self._partial = None

    def __enter__(self) -> ShardSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def encode_npy(array: np.ndarray) -> bytes:
    """The ``.npy`` bytes of ``array``."""
    data: bytes = wds.numpy_dumps(array)
    return data


def write_array_shards(
    arrays: Iterable[np.ndarray],
    labels: Sequence[int] | None,
    out: Path | str,
    shard_size: int,
    *,
    source: str = "arrays",
    overwrite: bool = False,
) -> DatasetMeta:
    """Write float arrays ``[C, H, W]`` (e.g. latents) as ``x.npy`` shards plus ``meta.json``.

    ``arrays`` are stored as float32 and passed through unchanged by the loader, so they must
    already be normalised. ``labels`` (one int per array) or ``None`` for unlabelled data.
    """
    out = Path(out)
    label_list = None if labels is None else [int(v) for v in labels]
    prepare_output(out, overwrite)
    shape: tuple[int, ...] | None = None
    count = 0
    with ShardSink(out, shard_size) as sink:
        for index, array in enumerate(arrays):
            x = np.asarray(array, dtype=np.float32)
            if x.ndim != 3 or (shape is not None and x.shape != shape):
                raise AntError(
                    f"array {index} has shape {list(x.shape)}; every array must be [C, H, W] "
                    f"of one shape{f' {list(shape)}' if shape else ''}"
                )
            shape = x.shape
            sample: dict[str, str | bytes] = {"__key__": sample_key(index), "x.npy": encode_npy(x)}
            if label_list is not None:
                if index >= len(label_list):
                    raise AntError(f"got {len(label_list)} labels for more arrays: pass one each")
                sample["cls"] = str(label_list[index]).encode()
            sink.write(sample)
            count += 1
    if shape is None:
        raise AntError("no arrays to write: pass at least one [C, H, W] array")
    if label_list is not None and len(label_list) != count:
        raise AntError(f"got {len(label_list)} labels for {count} arrays: pass one label per array")
    classes = [str(i) for i in range(max(label_list) + 1)] if label_list is not None else []
    meta = DatasetMeta(
        count=count,
        shape=[shape[1], shape[2], shape[0]],
        classes=classes,
        source=source,
        shards=sink.shards,
        shard_counts=sink.counts,
        image_size=None,
        format="npy",
        labelled=label_list is not None,
    )
    write_meta(out, meta)
    return meta
