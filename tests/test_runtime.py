"""The one Runtime of every command: torchrun variables checked, one device rule, gloo ranks."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ant.core.errors import AntError
from ant.core.runtime import Runtime, pick_device


def test_one_process_by_default_on_the_cpu() -> None:
    runtime = Runtime.from_env("cpu", env={})
    assert (runtime.rank, runtime.world_size, runtime.local_rank) == (0, 1, 0)
    assert runtime.device == torch.device("cpu") and runtime.is_main and not runtime.distributed
    assert runtime == Runtime()
    assert runtime.sum_over_ranks([3, 4]) == [3, 4]
    with runtime.process_group() as same:
        assert same is runtime and not dist.is_initialized()
    runtime.barrier()


def test_torchrun_variables_are_read_and_the_work_is_sharded() -> None:
    runtime = Runtime.from_env("cpu", env={"RANK": "2", "WORLD_SIZE": "3", "LOCAL_RANK": "0"})
    assert (runtime.rank, runtime.world_size, runtime.local_rank) == (2, 3, 0)
    assert runtime.distributed and not runtime.is_main
    assert runtime.shard(range(10)) == [2, 5, 8]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"RANK": "one"}, "RANK='one' is not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK 2 is not in 0..WORLD_SIZE-1 (2)"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE 0 must be at least 1"),
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "-1"}, "LOCAL_RANK -1 is not in"),
    ],
)
def test_bad_torchrun_variables_are_one_line_errors(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(AntError) as info:
        Runtime.from_env("cpu", env=env)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_device_choices() -> None:
    assert pick_device("cpu", 5) == torch.device("cpu")
    with pytest.raises(AntError, match="unknown device 'tpu'"):
        pick_device("tpu")
    if torch.cuda.is_available():
        # The one rule: a process sees LOCAL_RANK % device_count() as its GPU.
        local_rank = torch.cuda.device_count() + 1
        assert pick_device("cuda", local_rank).index == local_rank % torch.cuda.device_count()
    else:
        assert pick_device("auto") == torch.device("cpu")
        with pytest.raises(AntError, match="no CUDA device"):
            pick_device("cuda")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, port: int, out: str) -> None:
    env = {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
    os.environ.update({**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    runtime = Runtime.from_env("cpu")
    # Outside a group: a gloo group is made for the sum alone.
    alone = runtime.sum_over_ranks([rank + 1, 10])
    with runtime.process_group() as joined:
        assert dist.is_initialized() and dist.get_backend() == "gloo"
        runtime.barrier()
        inside = joined.sum_over_ranks([rank, 1])
        gathered: list[object] = [None, None]
        dist.all_gather_object(gathered, runtime.shard(range(7)))
        runtime.barrier()
    assert not dist.is_initialized()
    if runtime.is_main:
        Path(out).write_text(json.dumps([alone, inside, gathered]))


def test_two_gloo_ranks_meet_sum_and_share(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2)
    alone, inside, shards = json.loads(out.read_text())
    assert alone == [3, 20] and inside == [1, 2]
    assert shards == [[0, 2, 4, 6], [1, 3, 5]]
