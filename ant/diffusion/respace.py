"""Timestep respacing: run a T-step diffusion on a subset of S of its timesteps.

Keeping the timesteps t_0 < t_1 < ... < t_{S-1} defines a shorter Markov chain with the same
marginals: its alpha-bar at step i is the original alpha-bar at t_i, and its betas follow as
beta_i = 1 - alpha-bar_{t_i} / alpha-bar_{t_{i-1}} (Nichol & Dhariwal 2021, Sec. 4). A model
trained on the full chain is fed the original indices t_i, never the respaced index i.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch

from ant.diffusion.gaussian import betas_from_alphas_cumprod


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """``count`` evenly spaced timesteps of ``0..num_timesteps-1``, both ends included.

    Exactly the timesteps of guided-diffusion's ``space_timesteps`` with one section (and so of
    DiT's sampler): a position starts at 0.0 and grows by the float stride ``(T - 1) / (S - 1)``
    once per kept step; step i is the position rounded to the nearest integer, halves to even.
    The accumulated sum is not exact, so at a tie (``i (T - 1) / (S - 1) = k + 1/2``) the result
    follows the float error, not the exact value: step 10 of 21 out of 1000 is 499 (the exact
    499.5 rounds to 500). For 250 of 1000: 0, 4, 8, ..., 991, 995, 999.
    """
    if not 2 <= count <= num_timesteps:
        raise ValueError(
            f"can keep between 2 and {num_timesteps} of {num_timesteps} timesteps, got {count}"
        )
    stride = (num_timesteps - 1) / (count - 1)
    position, kept = 0.0, []
    for _ in range(count):
        kept.append(round(position))
        position += stride
    return sorted(set(kept))


def check_timesteps(timesteps: Sequence[int], num_timesteps: int) -> list[int]:
    """The kept timesteps as a list, after checking they are strictly increasing and in range."""
    kept = [int(t) for t in timesteps]
    if not kept:
        raise ValueError("respacing needs at least one timestep")
    if kept[0] < 0 or kept[-1] >= num_timesteps:
        raise ValueError(f"timesteps must lie in 0..{num_timesteps - 1}, got {kept}")
    if any(b <= a for a, b in pairwise(kept)):
        raise ValueError("timesteps must be strictly increasing")
    return kept


def respaced_betas(alphas_cumprod: torch.Tensor, timesteps: Sequence[int]) -> torch.Tensor:
    """Betas of the chain that keeps only ``timesteps`` (Nichol & Dhariwal 2021, Sec. 4).

    beta_i = 1 - alpha-bar_{t_i} / alpha-bar_{t_{i-1}}, with alpha-bar before the first kept step
    equal to 1; the cumulative product of (1 - beta_i) is then alpha-bar at the kept steps.
    """
    kept = check_timesteps(timesteps, alphas_cumprod.shape[0])
    return betas_from_alphas_cumprod(alphas_cumprod.to(torch.float64)[torch.tensor(kept)])
