"""The training data loader: WebDataset shards to batches ``(x, y)`` for one DDP rank.

Two modes:

* ``resampled=True`` (training): every DataLoader worker draws shards with replacement from the
  whole shard list, seeded by ``(seed, rank, worker, epoch)``, so the stream never ends; each
  iteration of the loader is an epoch of exactly ``epoch_samples // (batch_size * world_size)``
  full batches on every rank (``with_epoch``), whatever the shard count, so DDP ranks never
  wait on each other. ``epoch_samples`` counts samples over all ranks and defaults to the data
  set's sample count from meta.json.
* ``resampled=False`` (one exact pass, e.g. evaluation): rank ``r`` reads shards
  ``r, r + world_size, ...`` and its workers split those again, so over all ranks every sample
  is seen exactly once. Each worker keeps its partial last batch, so ranks may get different
  batch counts. There must be at least ``world_size`` shards; a rank with fewer shards than
  ``num_workers`` uses one worker per shard (extra workers would have nothing to read).

Node splitting uses the ``rank`` and ``world_size`` passed in, never the process group, since
DataLoader workers cannot see it. Samples are shuffled in a seeded buffer and optionally flipped
left-right (seeded). Unlabelled samples get ``y = -1`` (:data:`UNLABELLED`).

A shard or sample that cannot be read stops the loader with a one-line AntError naming it,
unless ``skip_corrupt``: then it is skipped, logged as a warning, and recorded in
:attr:`ShardLoader.skipped`.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable, Iterator
from typing import Any, Generic, Literal, TypeVar, cast, overload

import torch
import webdataset as wds

from ant.core.errors import AntError, one_line
from ant.data.decode import UNLABELLED, Keyed, Pair
from ant.data.meta import DatasetMeta
from ant.data.shards import resolve_shards
from ant.data.stream import ShardStream, Skipped, StreamPlan, WorkerItem

__all__ = ["UNLABELLED", "ShardLoader", "Skipped", "make_loader"]

logger = logging.getLogger(__name__)

BatchT = TypeVar("BatchT", Pair, Keyed)


class ShardLoader(Generic[BatchT]):
    """Batches of one rank: ``(x [B, C, H, W] float32, y [B] int64)``, or with keys.

    Each iteration is one epoch. ``len()`` is the number of batches per epoch in resampled mode
    (the same on every rank); a non-resampled loader has no known length.
    """

    def __init__(
        self,
        stream: ShardStream,
        num_workers: int,
        batches_per_epoch: int | None,
    ) -> None:
        self.stream = stream
        self.num_workers = num_workers
        self.batches_per_epoch = batches_per_epoch
        self.epoch = 0
        self.skipped: list[Skipped] = []

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            raise TypeError("a non-resampled loader has no length known in advance")
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[BatchT]:
        self.stream.epoch = self.epoch
        self.epoch += 1
        # A private generator: creating the iterator must not draw from the global torch RNG,
        # or a resumed run (which creates it at another point) would diverge from an unbroken one.
        generator = torch.Generator().manual_seed(self.stream.plan.seed + self.epoch)
        pipeline = wds.WebLoader(
            self.stream,
            batch_size=None,
            num_workers=self.num_workers,
            generator=generator,
            worker_init_fn=ignore_stop_signals if self.num_workers else None,
        ).compose(self._unpack)
        if self.batches_per_epoch is not None:
            pipeline = pipeline.with_epoch(self.batches_per_epoch)
        message = None
        try:
            yield from pipeline
        except AntError as exc:
            message = one_line(exc)
            # Drop the worker error's traceback: it sits in a reference cycle with the
            # DataLoader iterator, and shutting the workers down from the garbage collector
            # makes torch wait 5 s per worker before killing them.
            exc.__traceback__ = None
        if message is not None:
            raise AntError(message)

    def _unpack(self, items: Iterable[WorkerItem]) -> Iterator[BatchT]:
        for item in items:
            for skipped in item.skipped:
                what = f"sample {skipped.key} of shard" if skipped.key else "shard"
                logger.warning("skipped corrupt %s %s (%s)", what, skipped.url, skipped.reason)
                self.skipped.append(skipped)
            if item.batch is not None:
                yield cast(BatchT, item.batch)


def ignore_stop_signals(worker: int) -> None:
    """DataLoader workers leave SIGTERM and SIGINT to the trainer: torchrun signals the whole
    process group, and a worker killed mid-epoch would fail the step the trainer still takes
    before it saves. The workers end with the trainer."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _sample_shape(meta: DatasetMeta | None) -> tuple[int, int, int] | None:
    if meta is None:
        return None
    height, width, channels = meta.shape
    return channels, height, width


@overload
def make_loader(
    shards: str,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    resampled: bool = True,
    epoch_samples: int | None = None,
    shuffle_buffer: int = 1000,
    hflip: bool = False,
    num_workers: int = 0,
    skip_corrupt: bool = False,
    return_keys: Literal[False] = False,
    num_classes: int | None = None,
) -> ShardLoader[Pair]: ...


@overload
def make_loader(
    shards: str,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    resampled: bool = True,
    epoch_samples: int | None = None,
    shuffle_buffer: int = 1000,
    hflip: bool = False,
    num_workers: int = 0,
    skip_corrupt: bool = False,
    return_keys: Literal[True],
    num_classes: int | None = None,
) -> ShardLoader[Keyed]: ...


def make_loader(
    shards: str,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    resampled: bool = True,
    epoch_samples: int | None = None,
    shuffle_buffer: int = 1000,
    hflip: bool = False,
    num_workers: int = 0,
    skip_corrupt: bool = False,
    return_keys: bool = False,
    num_classes: int | None = None,
) -> ShardLoader[Any]:
    """The loader of rank ``rank`` of ``world_size`` over ``shards`` (see the module docs).

    ``shards`` is a folder written by ``ant data pack`` (with meta.json), a brace pattern such as
    ``data/shard-{000000..000009}.tar`` or any URL webdataset opens (``pipe:cat ...``).
    ``batch_size`` is per rank. With ``return_keys`` batches are ``(x, y, keys)``. Every sample
    is checked against meta.json's shape, for finite values and, with ``num_classes``, for a
    label below it; a bad one is a corrupt sample named with its shard.
    """
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise AntError(
            f"bad loader settings: batch_size={batch_size}, rank={rank}, "
            f"world_size={world_size}; need batch_size >= 1 and 0 <= rank < world_size"
        )
    if num_workers < 0 or shuffle_buffer < 0 or (epoch_samples is not None and epoch_samples < 1):
        raise AntError("num_workers and shuffle_buffer must be >= 0 and epoch_samples >= 1")
    shard_set = resolve_shards(shards)
    urls = shard_set.urls
    batches: int | None = None
    workers = num_workers
    if resampled:
        total = epoch_samples if epoch_samples is not None else shard_set.count
        if total is None:
            raise AntError(
                f"the number of samples in '{shards}' is unknown (no meta.json): "
                "set data.epoch_samples"
            )
        batches = total // (batch_size * world_size)
        if batches == 0:
            raise AntError(
                f"an epoch of {total} samples is less than one global batch of "
                f"{batch_size} x {world_size} ranks: lower the batch size or raise epoch_samples"
            )
    else:
        if epoch_samples is not None:
            raise AntError(
                "epoch_samples applies to resampled loading only: a non-resampled epoch is one "
                "pass over the data; unset epoch_samples or set resampled=true"
            )
        if len(urls) < world_size:
            raise AntError(
                f"{len(urls)} shard(s) cannot be split over {world_size} ranks without "
                f"resampling: re-pack with a smaller --shard-size to get at least "
                f"{world_size * max(1, num_workers)} shards, or set data.resampled=true"
            )
        workers = min(num_workers, len(urls[rank::world_size]))
    plan = StreamPlan(
        urls=tuple(urls),
        expected=tuple(shard_set.expected_counts()),
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
        resampled=resampled,
        shuffle_buffer=shuffle_buffer,
        hflip=hflip,
        skip_corrupt=skip_corrupt,
        return_keys=return_keys,
        num_workers=max(workers, 1),
        num_classes=num_classes,
        shape=_sample_shape(shard_set.meta),
    )
    return ShardLoader(ShardStream(plan), workers, batches)
