"""``meta.json``: the description that ``ant data pack`` writes next to its shards."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ant.core.errors import AntError

META_NAME = "meta.json"
SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".tar"
DEFAULT_SHARD_SIZE = 10_000
"""Samples per shard unless ``ant data pack --shard-size`` says otherwise."""
FORMATS = ("png", "npy")


def shard_name(index: int) -> str:
    """The file name of shard ``index``: ``shard-000000.tar``, ``shard-000001.tar``, ..."""
    return f"{SHARD_PREFIX}{index:06d}{SHARD_SUFFIX}"


@dataclass(frozen=True)
class DatasetMeta:
    """What a packed data set holds.

    ``shape`` is ``[H, W, C]`` for every format (``npy`` payloads are stored as ``[C, H, W]``);
    ``format`` is ``png`` (uint8 images) or ``npy`` (float arrays, e.g. latents).
    ``shard_counts[i]`` is the number of samples in ``shards[i]``. ``latent`` describes how
    ``ant data encode`` made latent shards (the VAE, its scale, the source images); None otherwise.
    """

    count: int
    shape: list[int]
    classes: list[str]
    source: str
    shards: list[str]
    shard_counts: list[int]
    image_size: int | None = None
    format: str = "png"
    labelled: bool = False
    latent: dict[str, Any] | None = None

    @property
    def channels(self) -> int:
        """The number of channels C."""
        return self.shape[2]

    @property
    def num_classes(self) -> int:
        """The number of classes (0 when unlabelled)."""
        return len(self.classes)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``meta.json``."""
        data = asdict(self)
        data["channels"] = self.channels
        data["num_classes"] = self.num_classes
        if self.latent is None:
            del data["latent"]
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> DatasetMeta:
        """Parse the object read from ``meta.json`` at ``where``; bad content raises AntError."""
        try:
            meta = cls(
                count=int(data["count"]),
                shape=[int(v) for v in data["shape"]],
                classes=[str(c) for c in data["classes"]],
                source=str(data["source"]),
                shards=[str(s) for s in data["shards"]],
                shard_counts=[int(n) for n in data["shard_counts"]],
                image_size=None if data.get("image_size") is None else int(data["image_size"]),
                format=str(data.get("format", "png")),
                labelled=bool(data.get("labelled", bool(data["classes"]))),
                latent=_latent(data.get("latent")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AntError(
                f"{where} is not a valid ant meta.json (bad or missing {exc}): re-pack the data "
                "with 'ant data pack'"
            ) from None
        if len(meta.shape) != 3 or len(meta.shards) != len(meta.shard_counts):
            raise AntError(f"{where} is inconsistent (shape or shard counts): re-pack the data")
        if meta.format not in FORMATS:
            raise AntError(f"{where}: unknown format '{meta.format}', expected one of {FORMATS}")
        return meta


def _latent(value: Any) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise TypeError("latent")
    return value


def read_meta(directory: Path) -> DatasetMeta:
    """The metadata of the packed data set in ``directory``."""
    path = directory / META_NAME
    if not path.is_file():
        raise AntError(
            f"no {META_NAME} in '{directory}': pack a data set there with 'ant data pack "
            f"SOURCE {directory}', or pass a shard pattern like shard-{{000000..000009}}.tar"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AntError(
            f"cannot read '{path}' ({exc}): re-pack the data with 'ant data pack'"
        ) from None
    return DatasetMeta.from_json(data, str(path))


def write_meta(directory: Path, meta: DatasetMeta) -> Path:
    """Write ``meta.json`` into ``directory`` atomically (temporary file, then rename)."""
    path = directory / META_NAME
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(meta.to_json(), indent=2) + "\n")
    os.replace(partial, path)
    return path
