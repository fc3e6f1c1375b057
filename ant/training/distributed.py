"""One process or many: the process group, the device and the rank of this process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ant.errors import AntError


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


def pick_device(preference: str, local_rank: int) -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available (or asked for), else the CPU."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise AntError("--device cuda was asked for but CUDA is not available; use --device cpu")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun set up (``WORLD_SIZE`` > 1), or run as one process.

    NCCL is used on GPUs and gloo on the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=target)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group, if one was joined."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()
