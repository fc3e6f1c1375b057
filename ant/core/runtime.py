"""Where this process runs: its torchrun rank, its share of the work and its device.

The one rule for every command (train, sample, eval, encode, analyze): ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` come from torchrun and are checked; the GPU of a process is
``LOCAL_RANK % device_count()``, so a cluster that shows each process only its own GPU works as
well as one that shows all of them. torch is imported on use, so commands that only parse
their options do not pay for it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from ant.core.errors import AntError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
# Ranks meet only at the end, and a resumed run can leave them very uneven amounts of work.
GATHER_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Launch:
    """The rank and world size of this process (1 process unless launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Launch:
        """Read torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (default: one process)."""
        env = os.environ if env is None else env
        try:
            launch = cls(
                rank=int(env.get("RANK", "0")),
                world_size=int(env.get("WORLD_SIZE", "1")),
                local_rank=int(env.get("LOCAL_RANK", "0")),
            )
        except ValueError:
            raise AntError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
        if not 0 <= launch.rank < launch.world_size:
            raise AntError(f"RANK {launch.rank} is not in 0..WORLD_SIZE-1 ({launch.world_size})")
        return launch

    @property
    def distributed(self) -> bool:
        """Whether several processes share the work."""
        return self.world_size > 1

    def shard(self, indices: Iterable[int]) -> list[int]:
        """This rank's share of ``indices``: those with ``index % world_size == rank``."""
        return [i for i in indices if i % self.world_size == self.rank]

    def device(self, choice: str) -> torch.device:
        """The device for ``auto`` (CUDA if available), ``cpu`` or ``cuda`` (this rank's GPU,
        ``LOCAL_RANK % device_count()``)."""
        import torch

        if choice not in DEVICES:
            raise AntError(f"unknown device '{choice}'; choose from {', '.join(DEVICES)}")
        if choice == "auto":
            choice = "cuda" if torch.cuda.is_available() else "cpu"
        if choice == "cpu":
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise AntError("--device cuda: no CUDA device is available; use --device cpu")
        return torch.device("cuda", self.local_rank % torch.cuda.device_count())

    @contextlib.contextmanager
    def gloo_group(self) -> Iterator[None]:
        """A gloo process group of all ranks for the duration of the block (nothing for one
        process); ranks may reach its collectives up to :data:`GATHER_TIMEOUT` apart."""
        if not self.distributed:
            yield
            return
        import torch.distributed as dist

        try:
            dist.init_process_group(
                "gloo", rank=self.rank, world_size=self.world_size, timeout=GATHER_TIMEOUT
            )
        except (ValueError, RuntimeError) as exc:
            raise AntError(f"cannot join the other torchrun processes: {exc}") from None
        try:
            yield
        finally:
            dist.destroy_process_group()

    def sum_over_ranks(self, counts: Sequence[int]) -> list[int]:
        """``counts`` summed over all ranks; with several, waits for every rank to get here.

        A gloo process group is created for this only and destroyed before returning.
        """
        if not self.distributed:
            return list(counts)
        import torch
        import torch.distributed as dist

        with self.gloo_group():
            total = torch.tensor(list(counts), dtype=torch.long)
            dist.all_reduce(total)
            return [int(value) for value in total.tolist()]
