"""Exact interval clustering by dynamic programming (Go et al. 2023, Sec. 4.1 and Appendix).

ANT groups the T denoising tasks (timesteps ``0..T-1``) into k contiguous, non-empty intervals
``I_1..I_k`` that minimise ``sum_i cost(I_i)``. With ``F[j, s]`` the optimal cost of splitting the
suffix ``s..T-1`` into ``j`` intervals, ``F[0, T] = 0`` and

    F[j, s] = min over e in s..T-1 of  cost(s, e) + F[j - 1, e + 1],

and the answer is ``F[k, 0]``. Each layer is one vectorised minimum over a (starts x ends) block,
so the whole solve is ``O(k T^2)`` operations with ``O(1)`` interval costs (prefix sums), in
``O(k T)`` memory plus one bounded block of costs.

Tie rule: among all optimal partitions the solver returns the one whose list of interval ends
``(e_1, ..., e_k)`` is lexicographically smallest, i.e. the earliest first boundary, then the
earliest second boundary given the first, and so on. Costs are compared exactly as floating-point
numbers; integer-valued costs (such as the timestep objective's) therefore tie exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ant.clustering.intervals import Interval

IntervalCost = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``cost(starts, ends)``: the costs of the inclusive intervals ``[start, end]``, elementwise.

The arguments broadcast against each other (the solver passes a column of starts and a row of
ends). Entries with ``end < start`` are ignored, so the function may return anything finite or
infinite there, but it must not fail on them.
"""

BLOCK_ELEMENTS = 1 << 22
"""Most interval costs held at once (32 MiB of float64); larger problems are solved in blocks."""


@dataclass(frozen=True)
class Partition:
    """An optimal split of ``0..T-1``: inclusive 0-indexed intervals and their total cost."""

    intervals: list[Interval]
    cost: float


def _cost_block(
    cost: np.ndarray | IntervalCost, starts: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    if isinstance(cost, np.ndarray):
        block = cost[starts[0] : starts[-1] + 1, :].astype(np.float64, copy=False)
    else:
        block = np.asarray(cost(starts[:, None], ends[None, :]), dtype=np.float64)
        block = np.broadcast_to(block, (starts.size, ends.size))
    block = np.where(ends[None, :] >= starts[:, None], block, np.inf)
    if np.isnan(block).any():
        raise ValueError("the interval cost is NaN for some interval")
    return block


def solve_partition(
    cost: np.ndarray | IntervalCost, k: int, num_timesteps: int | None = None
) -> Partition:
    """Split ``0..T-1`` into ``k`` contiguous non-empty intervals of least total cost, exactly.

    Interval clustering of ANT (Go et al. 2023, Sec. 4.1): the dynamic programme of this module's
    docstring, ``O(k T^2)`` time. ``cost`` is either a dense ``T x T`` matrix whose upper triangle
    ``cost[s, e]`` (``s <= e``) holds the cost of the inclusive interval ``[s, e]``, or an
    :data:`IntervalCost` function of broadcast start and end arrays; ``num_timesteps`` is then
    required. Among optimal partitions, the one with the lexicographically smallest list of
    interval ends is returned.

    Raises ``ValueError`` if ``k`` is not in ``1..T``, the matrix is not square, or a cost is NaN.
    """
    if isinstance(cost, np.ndarray):
        if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
            raise ValueError(f"the cost matrix must be square (T x T), got shape {cost.shape}")
        if num_timesteps is not None and num_timesteps != cost.shape[0]:
            raise ValueError(
                f"num_timesteps={num_timesteps} does not match the {cost.shape[0]}x"
                f"{cost.shape[0]} cost matrix"
            )
        num_timesteps = cost.shape[0]
    elif num_timesteps is None:
        raise ValueError("num_timesteps is required with a cost function")
    total = num_timesteps
    if total < 1:
        raise ValueError(f"need at least one timestep, got {total}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= total:
        raise ValueError(f"k must be an integer in 1..{total} (the number of timesteps), got {k}")

    # best[j, s] = F[j, s]; choice[j, s] = the end of the first interval of that optimum. Layer j
    # is needed only where the prefix 0..s-1 can hold the other k - j intervals: s in
    # k-j..T-j, and s = 0 alone for the top layer.
    best = np.full((k + 1, total + 1), np.inf)
    best[0, total] = 0.0
    choice = np.zeros((k + 1, total), dtype=np.int64)
    ends = np.arange(total)
    rows = max(1, BLOCK_ELEMENTS // total)
    for stop in range(total, 0, -rows):
        first_row = max(0, stop - rows)
        block = _cost_block(cost, np.arange(first_row, stop), ends)
        for j in range(1, k + 1):
            low = max(first_row, k - j)
            high = min(stop, total - j + 1)
            if low >= high:
                continue
            candidates = block[low - first_row : high - first_row] + best[j - 1, 1:]
            picked = candidates.argmin(axis=1)
            choice[j, low:high] = picked
            best[j, low:high] = candidates[np.arange(high - low), picked]

    intervals: list[Interval] = []
    start = 0
    for j in range(k, 0, -1):
        end = int(choice[j, start])
        intervals.append(Interval(start, end))
        start = end + 1
    return Partition(intervals=intervals, cost=float(best[k, 0]))
