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

    Step i is ``i * (T - 1) / (S - 1)`` rounded to the nearest integer, halves to even (Python's
    ``round``), computed in integers so the result is exact. This is the spacing of
    guided-diffusion's ``space_timesteps`` for a single section (for 250 of 1000: 0, 4, 8, ...,
    52, 56, ..., 991, 995, 999). That code accumulates the stride in floating point, so at an exact
    tie (i (T - 1) / (S - 1) = k + 1/2, e.g. step 10 of 21 out of 1000) it can land on the other
    neighbour; no tie occurs for the usual counts (25, 50, 100, 250, 500 of 1000).
    """
    if not 2 <= count <= num_timesteps:
        raise ValueError(
            f"can keep between 2 and {num_timesteps} of {num_timesteps} timesteps, got {count}"
        )
    span, steps = num_timesteps - 1, count - 1
    return [_round_half_even(i * span, steps) for i in range(count)]


def _round_half_even(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2 == 1):
        return quotient + 1
    return quotient


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
