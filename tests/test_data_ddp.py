"""The loader under real DDP: two spawned processes with a gloo process group."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from ant.data import make_loader
from ant.data.pack import pack

WORLD_SIZE = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gathered(value: object) -> list[object]:
    """``value`` from every rank, through the gloo process group."""
    values: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def rank_main(rank: int, port: int, even: str, uneven: str, result: str) -> None:
    """One DDP rank: count resampled batches and collect the keys of a non-resampled pass."""
    # Ranks started by torchrun fork their DataLoader workers; spawned test ranks would spawn
    # them (slowly) unless told otherwise.
    mp.set_start_method("fork", force=True)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        counts = {}
        for name, shards, workers in (("even", even, 2), ("uneven", uneven, 0)):
            loader = make_loader(
                shards, batch_size=16, rank=rank, world_size=world, seed=5, num_workers=workers
            )
            counts[name] = gathered(sum(1 for _ in loader))
        keys = [
            key
            for _, _, batch_keys in make_loader(
                uneven,
                batch_size=50,
                rank=rank,
                world_size=world,
                seed=5,
                resampled=False,
                num_workers=2,
                return_keys=True,
            )
            for key in batch_keys
        ]
        all_keys = gathered(keys)
        if rank == 0:
            Path(result).write_text(json.dumps({"counts": counts, "keys": all_keys}))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_get_equal_batches_and_disjoint_passes(tmp_path: Path) -> None:
    even = tmp_path / "even"
    assert pack("digits", even, shard_size=450).shard_counts == [450, 450, 450, 447]
    uneven = str(even / "shard-{000000..000002}.tar")
    result = tmp_path / "result.json"
    context = mp.start_processes(
        rank_main,
        args=(free_port(), str(even), uneven, str(result)),
        nprocs=WORLD_SIZE,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the DDP ranks did not finish within 120 s")
    outcome = json.loads(result.read_text())
    batch = 16 * WORLD_SIZE
    assert outcome["counts"] == {
        "even": [1797 // batch] * WORLD_SIZE,
        "uneven": [1350 // batch] * WORLD_SIZE,
    }
    rank0, rank1 = outcome["keys"]
    assert not set(rank0) & set(rank1)
    assert sorted(rank0 + rank1) == [f"{i:08d}" for i in range(1350)]
