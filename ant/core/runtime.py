"""Where this process runs: its torchrun rank, its share of the work, its device and its group.

:class:`Runtime` is the one distributed context of every command (train, sample, eval, encode,
analyze). ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` come from torchrun and are checked; the GPU
of a process is ``LOCAL_RANK % device_count()``, so a cluster that shows each process only its
own GPU works as well as one that shows all of them. torch is imported on use, so commands that
only parse their options do not pay for it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from ant.core.errors import AntError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
# Ranks of sampling and encoding meet only at the end, and a resumed job can leave them very
# uneven amounts of work.
GATHER_TIMEOUT = timedelta(hours=24)
# Training ranks meet every step; a rank silent this long is gone.
TRAINING_TIMEOUT = timedelta(minutes=30)


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    """The device for ``auto`` (CUDA if available), ``cpu`` or ``cuda``: GPU
    ``local_rank % device_count()``, made the current CUDA device."""
    import torch

    if choice not in DEVICES:
        raise AntError(f"unknown device '{choice}'; choose from {', '.join(DEVICES)}")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AntError("--device cuda: no CUDA device is available; use --device cpu")
    target = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(target)
    return target


def _env_int(env: Mapping[str, str], name: str, default: str) -> int:
    value = env.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise AntError(f"{name}={value!r} is not an integer; torchrun sets it, unset it") from None


@dataclass(frozen=True)
class Runtime:
    """This process among ``world_size`` (1 unless launched by torchrun), and its device.

    ``Runtime()`` is one process on the CPU; :meth:`from_env` reads torchrun's variables.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=_cpu)

    @classmethod
    def from_env(cls, device: str = "auto", env: Mapping[str, str] | None = None) -> Runtime:
        """Read and check ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (default: one process)
        and pick this process's ``device`` (``auto``, ``cpu`` or ``cuda``)."""
        env = os.environ if env is None else env
        rank = _env_int(env, "RANK", "0")
        world_size = _env_int(env, "WORLD_SIZE", "1")
        local_rank = _env_int(env, "LOCAL_RANK", "0")
        if world_size < 1:
            raise AntError(f"WORLD_SIZE {world_size} must be at least 1")
        if not 0 <= rank < world_size:
            raise AntError(f"RANK {rank} is not in 0..WORLD_SIZE-1 ({world_size})")
        if not 0 <= local_rank < world_size:
            raise AntError(f"LOCAL_RANK {local_rank} is not in 0..WORLD_SIZE-1 ({world_size})")
        return cls(rank, world_size, local_rank, pick_device(device, local_rank))

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, which writes logs, checkpoints, reports and meta files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether several processes share the work."""
        return self.world_size > 1

    def shard(self, indices: Iterable[int]) -> list[int]:
        """This rank's share of ``indices``: those with ``index % world_size == rank``."""
        return [i for i in indices if i % self.world_size == self.rank]

    @contextlib.contextmanager
    def process_group(
        self, backend: str | None = None, timeout: timedelta = GATHER_TIMEOUT
    ) -> Iterator[Runtime]:
        """All ranks in one process group for the duration of the block: ``backend`` (default
        NCCL on a GPU, gloo on the CPU) with collectives up to ``timeout`` apart. Nothing for
        one process, or when a group is already up (it is then left as it is)."""
        if not self.distributed:
            yield self
            return
        import torch.distributed as dist

        if dist.is_initialized():
            yield self
            return
        backend = backend or ("nccl" if self.device.type == "cuda" else "gloo")
        try:
            dist.init_process_group(
                backend, rank=self.rank, world_size=self.world_size, timeout=timeout
            )
        except (ValueError, RuntimeError) as exc:
            raise AntError(f"cannot join the other torchrun processes: {exc}") from None
        try:
            yield self
        finally:
            dist.destroy_process_group()

    def barrier(self) -> None:
        """Wait for every rank, in the current process group (nothing for one process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def sum_over_ranks(self, counts: Sequence[int]) -> list[int]:
        """``counts`` summed over all ranks; with several, waits for every rank to get here.

        Uses the current process group, or a gloo group made for this only.
        """
        if not self.distributed:
            return list(counts)
        import torch
        import torch.distributed as dist

        with self.process_group("gloo"):
            on = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
            total = torch.tensor(list(counts), dtype=torch.long, device=on)
            dist.all_reduce(total)
            return [int(value) for value in total.tolist()]
