"""The worker side of the loader: one DataLoader worker's stream of batches of one rank."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from ant.core.errors import AntError
from ant.data.decode import Batch, Decoded, check_label, collate, decode_sample
from ant.data.shards import ShardError, describe_exception, iter_shard


@dataclass(frozen=True)
class Skipped:
    """A shard (``key`` None) or a sample that was skipped because it could not be read."""

    url: str
    key: str | None
    reason: str


@dataclass(frozen=True)
class StreamPlan:
    """Everything a worker needs to produce its stream of batches (picklable)."""

    urls: tuple[str, ...]
    expected: tuple[int | None, ...]
    batch_size: int
    rank: int
    world_size: int
    seed: int
    resampled: bool
    shuffle_buffer: int
    hflip: bool
    skip_corrupt: bool
    return_keys: bool
    num_workers: int
    num_classes: int | None = None
    """Labels must be in ``0 .. num_classes - 1`` (None: not checked)."""
    shape: tuple[int, int, int] | None = None
    """Every sample's ``[C, H, W]`` (meta.json's; None: that of the first sample)."""


@dataclass(frozen=True)
class WorkerItem:
    """What a worker sends back: a batch (None at the very end) and what it skipped before it."""

    batch: Batch | None
    skipped: tuple[Skipped, ...]


def _no_worker_seed() -> int:
    return 0


class ShardStream(IterableDataset[WorkerItem]):
    """The stream of batches of one DataLoader worker of one rank."""

    def __init__(self, plan: StreamPlan) -> None:
        super().__init__()
        self.plan = plan
        self.epoch = 0

    def __iter__(self) -> Iterator[WorkerItem]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        pending: list[Skipped] = []
        samples: Iterator[dict[str, Any]] = self._read(self._urls(worker), pending)
        if self.plan.shuffle_buffer > 1:
            rng = self._rng(worker, "shuffle")
            samples = wds.shuffle(self.plan.shuffle_buffer, rng=rng)(samples)
        decoded = self._decode(samples, pending, worker)
        collation = functools.partial(collate, return_keys=self.plan.return_keys)
        batcher = wds.batched(
            self.plan.batch_size, collation_fn=collation, partial=not self.plan.resampled
        )
        for batch in batcher(decoded):
            yield WorkerItem(batch, tuple(pending))
            pending.clear()
        if pending:
            yield WorkerItem(None, tuple(pending))

    def _rng(self, worker: int, purpose: str) -> random.Random:
        plan = self.plan
        return random.Random(f"{plan.seed}/{plan.rank}/{worker}/{self.epoch}/{purpose}")

    def _urls(self, worker: int) -> Iterable[dict[str, str]]:
        plan = self.plan
        if plan.resampled:
            seed = self._rng(worker, "shards").getrandbits(31)
            return wds.ResampledShards(
                list(plan.urls), seed=seed, worker_seed=_no_worker_seed, deterministic=True
            )
        mine = list(plan.urls[plan.rank :: plan.world_size][worker :: plan.num_workers])
        order_seed = self._rng(worker, "shards").getrandbits(31)
        return wds.SimpleShardList(mine, seed=order_seed if plan.shuffle_buffer > 1 else None)

    def _skip(self, error: ShardError, pending: list[Skipped]) -> None:
        if not self.plan.skip_corrupt:
            raise AntError(error.message()) from error
        pending.append(Skipped(error.url, error.key, error.reason))

    def _read(
        self, urls: Iterable[dict[str, str]], pending: list[Skipped]
    ) -> Iterator[dict[str, Any]]:
        limit = 10 * len(self.plan.urls) + 10
        barren = 0
        expected = dict(zip(self.plan.urls, self.plan.expected, strict=True))
        for item in urls:
            url = item["url"]
            count = 0
            try:
                for sample in iter_shard(url):
                    count += 1
                    yield sample
                if expected[url] is not None and count != expected[url]:
                    reason = f"read {count} samples, meta.json lists {expected[url]}"
                    raise ShardError(url, reason)
            except ShardError as error:
                self._skip(error, pending)
            barren = 0 if count else barren + 1
            if self.plan.resampled and barren >= limit:
                raise AntError(
                    f"the last {barren} shards drawn were all empty or corrupt (e.g. "
                    f"{url}): no readable samples; check the shards with "
                    "'ant data info --verify' and re-pack the data"
                )

    def _decode(
        self, samples: Iterable[dict[str, Any]], pending: list[Skipped], worker: int
    ) -> Iterator[Decoded]:
        flip = self._rng(worker, "flip") if self.plan.hflip else None
        shape: tuple[int, ...] | None = self.plan.shape
        for sample in samples:
            url, key = str(sample.get("__url__", "?")), str(sample.get("__key__", "?"))
            try:
                x, y, key = decode_sample(sample)
                if shape is not None and x.shape != shape:
                    what = "meta.json's" if self.plan.shape is not None else "earlier"
                    raise ValueError(f"shape {list(x.shape)} differs from {what} {list(shape)}")
                check_label(y, self.plan.num_classes)
                if not np.isfinite(x).all():
                    raise ValueError("it holds NaN or infinite values")
            except Exception as exc:
                self._skip(ShardError(url, describe_exception(exc), key), pending)
                continue
            shape = x.shape
            if flip is not None and flip.random() < 0.5:
                x = np.ascontiguousarray(x[:, :, ::-1])
            yield x, y, key
