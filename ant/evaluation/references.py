"""Reference statistics: what samples are compared with, computed once per content and extractor.

A reference (``--ref REF``) is one of

- packed shards: a folder with meta.json, or a shard pattern;
- a folder of images (flat, or one sub-folder per class);
- an ADM-style ``.npz`` batch of images (``arr_0``, uint8 NHWC);
- a reference-statistics ``.npz`` written by ant (the cache entries below), or any ``.npz`` with
  ``mu`` and ``sigma`` of the extractor's pool features (Fréchet distance only).

For images, the pool-layer statistics (mean and covariance over every image, accumulated in
float64) and the features of up to :data:`MAX_REFERENCE_FEATURES` images (a seeded reservoir
sample, for the kernel distance and precision/recall) are stored in
``CACHE/references/<content hash>-<extractor fingerprint>.npz``. The content hash covers every
file of the reference, so the next evaluation against the same data and extractor reads the
statistics back without extracting a single feature, wherever the data was copied to.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ant.core.atomic import atomic_write
from ant.core.errors import AntError
from ant.data.meta import META_NAME
from ant.data.sources import IMAGE_SUFFIXES
from ant.evaluation.cache import cache_dir, content_hash, file_digest, shards_digest
from ant.evaluation.features import FeatureExtractor, iter_features
from ant.evaluation.images import ImageSet, folder_images, npz_images, shard_images

MAX_REFERENCE_FEATURES = 50_000
STATS_FORMAT = "ant-reference-statistics/1"

ReferenceKind = Literal["shards", "folder", "npz", "statistics"]


@dataclass(frozen=True)
class ReferenceSource:
    """A resolved ``--ref``: its kind, content hash and images (none for statistics files)."""

    spec: str
    kind: ReferenceKind
    digest: str
    images: ImageSet | None = None
    path: Path | None = None


@dataclass(frozen=True)
class ReferenceStats:
    """Pool-feature statistics of a reference, and (some of) its features."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    features: torch.Tensor | None
    extractor: str
    path: Path | None
    cached: bool

    def info(self, source: ReferenceSource) -> dict[str, Any]:
        """What the metrics report says about the reference."""
        return {
            "spec": source.spec,
            "kind": source.kind,
            "sha256": source.digest,
            "count": self.count,
            "features_kept": 0 if self.features is None else len(self.features),
            "statistics": str(self.path) if self.path else None,
            "cached": self.cached,
        }


def _npz_names(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return list(arrays.files)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise AntError(f"cannot read reference {path} as .npz ({exc})") from None


def _looks_like_shards(spec: str) -> bool:
    return "{" in spec or spec.endswith(".tar") or ":" in spec.split("/")[0]


def resolve_reference(spec: str) -> ReferenceSource:
    """What ``spec`` is, and its content hash; a one-line :class:`AntError` if it is nothing."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".npz":
        names = _npz_names(path)
        if "arr_0" in names:
            return ReferenceSource(spec, "npz", file_digest(path), npz_images(path), path)
        if {"mu", "sigma"} <= set(names):
            return ReferenceSource(spec, "statistics", file_digest(path), None, path)
        raise AntError(
            f"reference {path} holds neither images (arr_0) nor statistics (mu, sigma): "
            f"found {', '.join(names) or 'no arrays'}"
        )
    if path.is_dir() and (path / META_NAME).is_file():
        return ReferenceSource(spec, "shards", shards_digest(spec), shard_images(spec), path)
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        digest = content_hash((str(p.relative_to(path)), p) for p in files)
        return ReferenceSource(spec, "folder", digest, folder_images(path), path)
    if not path.exists() and _looks_like_shards(spec):
        return ReferenceSource(spec, "shards", shards_digest(spec), shard_images(spec))
    raise AntError(
        f"reference '{spec}' not found: give packed shards (a folder with {META_NAME} or a shard "
        "pattern), an image folder, an ADM .npz batch (arr_0) or a reference-statistics .npz"
    )


class _Accumulator:
    """Mean and covariance in float64 (shifted sums), and a seeded reservoir of rows."""

    def __init__(self, keep: int, seed: int = 0) -> None:
        self.keep = keep
        self.rng = np.random.default_rng(seed)
        self.count = 0
        self.shift: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None
        self.kept: list[np.ndarray] = []
        self.reservoir: np.ndarray | None = None

    def add(self, rows: np.ndarray) -> None:
        x = rows.astype(np.float64)
        if self.shift is None:
            self.shift = x.mean(axis=0)
            self.total = np.zeros_like(self.shift)
            self.squares = np.zeros((x.shape[1], x.shape[1]))
        assert self.total is not None and self.squares is not None
        centred = x - self.shift
        self.total += centred.sum(axis=0)
        self.squares += centred.T @ centred
        self._sample(rows.astype(np.float32))
        self.count += len(rows)

    def _sample(self, rows: np.ndarray) -> None:
        if self.keep == 0:
            return
        room = self.keep - self.count
        if room > 0:
            self.kept.append(rows[:room])
            rows = rows[room:]
            if not len(rows):
                return
        if self.reservoir is None:
            self.reservoir = np.concatenate(self.kept)
            self.kept = []
        seen = max(self.count, self.keep)
        for offset, row in enumerate(rows):
            slot = int(self.rng.integers(0, seen + offset + 1))
            if slot < self.keep:
                self.reservoir[slot] = row

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) with the unbiased covariance, as ``np.cov``."""
        if self.count < 2 or self.shift is None or self.total is None or self.squares is None:
            raise AntError(f"statistics need at least 2 images, got {self.count}")
        mean = self.total / self.count
        sigma = (self.squares - self.count * np.outer(mean, mean)) / (self.count - 1)
        return self.shift + mean, sigma

    def rows(self) -> np.ndarray:
        """The kept rows (every row when there were at most ``keep``)."""
        if self.reservoir is not None:
            return self.reservoir
        return np.concatenate(self.kept)


def frechet_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of ``features [N, D]`` in float64, computed as for references."""
    accumulator = _Accumulator(keep=0)
    accumulator.add(features.numpy())
    return accumulator.statistics()


def _save(path: Path, stats: ReferenceStats, layer: str, spec: str) -> None:
    arrays: dict[str, Any] = {
        "format": np.array(STATS_FORMAT),
        "mu": stats.mu,
        "sigma": stats.sigma,
        "count": np.array(stats.count),
        "extractor": np.array(stats.extractor),
        "layer": np.array(layer),
        "source": np.array(spec),
        "created": np.array(datetime.now(timezone.utc).isoformat(timespec="seconds")),
    }
    if stats.features is not None:
        arrays["features"] = stats.features.numpy()
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def load_statistics(path: Path, extractor: FeatureExtractor, *, cached: bool) -> ReferenceStats:
    """Statistics from an ``.npz`` (ant's, or ``mu``/``sigma`` of the extractor's pool features)."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            data = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise AntError(f"cannot read reference statistics {path} ({exc})") from None
    fingerprint = str(data["extractor"]) if "extractor" in data else None
    if fingerprint is not None and fingerprint != extractor.fingerprint:
        raise AntError(
            f"reference statistics {path} were computed with {fingerprint}, not "
            f"{extractor.fingerprint}: pass the reference images, or statistics of this extractor"
        )
    mu = np.asarray(data["mu"], dtype=np.float64).reshape(-1)
    sigma = np.asarray(data["sigma"], dtype=np.float64)
    if sigma.shape != (len(mu), len(mu)):
        raise AntError(f"reference statistics {path}: sigma is not a {len(mu)}x{len(mu)} matrix")
    features = torch.from_numpy(data["features"]) if "features" in data else None
    count = int(data["count"]) if "count" in data else 0
    return ReferenceStats(mu, sigma, count, features, fingerprint or "unknown", path, cached=cached)


def reference_statistics(
    source: ReferenceSource,
    extractor: FeatureExtractor,
    *,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    max_features: int = MAX_REFERENCE_FEATURES,
) -> ReferenceStats:
    """The statistics of ``source`` under ``extractor``: from the cache, or computed and cached."""
    if source.kind == "statistics":
        assert source.path is not None
        return load_statistics(source.path, extractor, cached=True)
    path = cache_dir() / "references" / f"{source.digest[:24]}-{extractor.fingerprint}.npz"
    if path.is_file():
        return load_statistics(path, extractor, cached=True)
    assert source.images is not None
    accumulator = _Accumulator(keep=max_features)
    layer = extractor.pool_layer
    for values in iter_features(
        extractor,
        [layer],
        source.images,
        batch_size=batch_size,
        device=device,
        description="reference features",
        progress=progress,
    ):
        accumulator.add(values[layer].numpy())
    mu, sigma = accumulator.statistics()
    stats = ReferenceStats(
        mu=mu,
        sigma=sigma,
        count=accumulator.count,
        features=torch.from_numpy(accumulator.rows()),
        extractor=extractor.fingerprint,
        path=path,
        cached=False,
    )
    _save(path, stats, layer, source.spec)
    return stats
