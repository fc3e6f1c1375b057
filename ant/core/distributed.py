"""One process or many: the process group, the device and the rank of this process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ant.core.runtime import Launch


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, which writes logs, checkpoints and samples."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group with more than one rank is in use."""
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """This process's device by the one rule of :class:`ant.core.runtime.Launch`, made current."""
    target = Launch(local_rank=local_rank).device(preference)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    return target


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun set up (``WORLD_SIZE`` > 1), or run as one process.

    ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are checked (:class:`ant.core.runtime.Launch`); NCCL
    is used on GPUs and gloo on the CPU.
    """
    launch = Launch.from_env()
    target = pick_device(device, launch.local_rank)
    if launch.distributed and not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return DistContext(
        rank=launch.rank,
        world_size=launch.world_size,
        local_rank=launch.local_rank,
        device=target,
    )


def shutdown(ctx: DistContext) -> None:
    """Leave the process group, if one was joined."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()
