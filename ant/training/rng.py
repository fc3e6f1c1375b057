"""Random-number-generator states of every rank, saved in checkpoints for exact resumes."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ant.core.runtime import Runtime


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's torch RNG states (CPU, and the CUDA device in use)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def gather_rng_states(ctx: Runtime) -> list[dict[str, torch.Tensor]]:
    """The RNG states of all ranks, in rank order (a collective under DDP)."""
    mine = rng_state(ctx.device)
    if not ctx.distributed:
        return [mine]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, mine)
    return [dict(s) for s in gathered]


def restore_rng_state(states: list[dict[str, torch.Tensor]] | None, ctx: Runtime) -> None:
    """Restore this rank's RNG states, if the checkpoint has them for this world size."""
    if not states or len(states) != ctx.world_size:
        return
    mine = states[ctx.rank]
    torch.set_rng_state(mine["cpu"].cpu())
    if ctx.device.type == "cuda" and "cuda" in mine:
        torch.cuda.set_rng_state(mine["cuda"].cpu(), ctx.device)
