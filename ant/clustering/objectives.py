"""Clustering objectives: how the T timesteps are grouped into k intervals (Go et al. 2023).

An objective is any object with ``cluster(space, k) -> Clustering`` (the :class:`Objective`
protocol). The built-in ones minimise a sum of interval costs exactly with the dynamic programme
of :mod:`ant.clustering.dp` (interval clustering, Sec. 4.1 of the paper):

- ``timestep``: ``cost(I) = sum_{t in I} |t - median(I)|``;
- ``snr``: ``cost(I) = sum_{t in I} |s(t) - s(median(I))|`` with ``s`` the schedule's log-SNR (or
  raw SNR);
- ``gradient``: ``cost(I) = - sum_{t in I} A[c, t]`` with ``c`` the interval's centre and ``A`` the
  task-affinity matrix;
- ``uniform``: equal widths, no optimisation.

The median of an interval ``[s, e]`` is the lower median index ``(s + e) // 2``. For an even
width any point between the two middle values minimises a sum of absolute deviations, so the
lower median gives the same cost as the upper one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from ant.clustering.dp import IntervalCost, solve_partition
from ant.clustering.intervals import Interval, equal_intervals
from ant.clustering.space import AFFINITY_FIX, TaskSpace


@dataclass(frozen=True)
class Clustering:
    """The k intervals an objective chose, their total cost (None if it optimises none)."""

    objective: str
    intervals: list[Interval]
    cost: float | None

    @property
    def k(self) -> int:
        """The number of intervals."""
        return len(self.intervals)

    @property
    def widths(self) -> list[int]:
        """The number of timesteps in each interval."""
        return [end - start + 1 for start, end in self.intervals]

    def to_dict(self) -> dict[str, Any]:
        """``objective``, ``k``, ``intervals`` (``[[start, end], ...]``), ``widths``, ``cost``."""
        return {
            "objective": self.objective,
            "k": self.k,
            "intervals": [[start, end] for start, end in self.intervals],
            "widths": self.widths,
            "cost": self.cost,
        }


class Objective(Protocol):
    """What the trainer and ``ant cluster`` need from a clustering objective."""

    def cluster(self, space: TaskSpace, k: int) -> Clustering:
        """Group the ``space.num_timesteps`` tasks into ``k`` contiguous intervals.

        Raises ``ValueError`` for a ``k`` outside ``1..T`` or a space the objective cannot use.
        """
        ...


class IntervalObjective(ABC):
    """An objective that is a sum of interval costs, minimised exactly by dynamic programming.

    Subclasses set :attr:`name` and implement :meth:`interval_cost`; :meth:`cluster` solves the
    interval-clustering problem of Go et al. 2023, Sec. 4.1 in ``O(k T^2)``.
    """

    name: ClassVar[str]

    @abstractmethod
    def interval_cost(self, space: TaskSpace) -> IntervalCost:
        """The cost of every inclusive interval ``[start, end]``, vectorised (see ``dp``)."""

    def cluster(self, space: TaskSpace, k: int) -> Clustering:
        """The optimal k intervals (earliest boundaries among ties) and their total cost."""
        partition = solve_partition(self.interval_cost(space), k, space.num_timesteps)
        return Clustering(self.name, partition.intervals, partition.cost)


def median_deviation_cost(values: np.ndarray) -> IntervalCost:
    """``cost([s, e]) = sum_{t=s}^{e} |v_t - v_m|``, ``m = (s + e) // 2``, in O(1) per interval.

    ``values`` must be monotone (either direction): then every ``v_t - v_m`` above the median has
    one sign and every one below it the other, and with prefix sums ``P[i] = sum_{t<i} v_t`` the
    cost is ``+-(P[e+1] + P[s] - P[m] - P[m+1] - r v_m)`` with ``r = (s + e) mod 2``. The last
    three terms depend on ``s + e`` only and are tabulated once, so an interval costs one lookup.
    Raises ``ValueError`` for non-monotone or non-finite values.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or not np.isfinite(v).all():
        raise ValueError("the per-timestep values must be a finite 1-D array")
    steps = np.diff(v)
    if not ((steps >= 0).all() or (steps <= 0).all()):
        raise ValueError("the per-timestep values must be monotone in t")
    sign = 1.0 if (steps >= 0).all() else -1.0
    prefix = np.concatenate(([0.0], np.cumsum(v)))
    total = np.arange(2 * v.size - 1)
    mid, odd = total // 2, total % 2
    by_sum = prefix[mid] + prefix[mid + 1] + odd * v[mid]

    def cost(start: np.ndarray, end: np.ndarray) -> np.ndarray:
        return sign * (prefix[end + 1] + prefix[start] - by_sum[start + end])

    return cost


class TimestepObjective(IntervalObjective):
    """Interval clustering by timestep: sum of |t - median| (Go et al. 2023, Sec. 4.1).

    The optimum has (near-)equal widths; for T = 1000, k = 5 the widths 199, 199, 200, 201, 201
    cost exactly as much as five of 200, and the tie rule picks the former.
    """

    name = "timestep"

    def interval_cost(self, space: TaskSpace) -> IntervalCost:
        """``sum_{t in I} |t - median(I)|``."""
        return median_deviation_cost(np.arange(space.num_timesteps, dtype=np.float64))


class SNRObjective(IntervalObjective):
    """Interval clustering by the schedule's log-SNR: sum of |s(t) - s(median)| (Sec. 4.1).

    ``space="log_snr"`` (default) uses ``s = log SNR``; ``space="snr"`` uses the raw SNR, which
    spans orders of magnitude (about 1e4 at t = 0 down to 1e-9 at t = T-1), so the deviations of
    the few low-noise timesteps dominate and the clusters collapse onto them: for the cosine
    schedule, T = 1000, k = 5 raw SNR gives [0] [1-3] [4-11] [12-36] [37-999]. SNR is monotone in
    t, so the median of ``s`` over an interval is ``s`` at the median index.
    """

    name = "snr"

    def __init__(self, space: Literal["log_snr", "snr"] = "log_snr") -> None:
        if space not in ("log_snr", "snr"):
            raise ValueError(f"space must be 'log_snr' or 'snr', got {space!r}")
        self.snr_space = space

    def interval_cost(self, space: TaskSpace) -> IntervalCost:
        """``sum_{t in I} |s(t) - s(median(I))|``."""
        values = space.log_snr if self.snr_space == "log_snr" else np.exp(space.log_snr)
        return median_deviation_cost(values)


class GradientObjective(IntervalObjective):
    """Interval clustering by task affinity: minus the affinity of each task to its centre.

    ``cost(I) = - sum_{t in I} A[c, t]`` with ``c = (start + end) // 2`` and ``A`` the
    gradient-direction task-affinity matrix of the space (Go et al. 2023, Sec. 4.1), so every
    timestep joins the interval whose centre it transfers to best. Row-wise prefix sums of ``A``
    make each interval cost O(1).
    """

    name = "gradient"

    def interval_cost(self, space: TaskSpace) -> IntervalCost:
        """``- sum_{t in I} A[centre(I), t]``."""
        if space.affinity is None:
            raise ValueError(
                "the gradient objective needs a task-affinity matrix: set clustering.affinity "
                f"(ant cluster --affinity) to a .npy file; {AFFINITY_FIX}"
            )
        rows = np.zeros((space.num_timesteps, space.num_timesteps + 1))
        np.cumsum(space.affinity, axis=1, out=rows[:, 1:])

        def cost(start: np.ndarray, end: np.ndarray) -> np.ndarray:
            centre = (start + end) // 2
            return rows[centre, start] - rows[centre, end + 1]

        return cost


class UniformObjective:
    """Equal-width timestep intervals, no optimisation (the cost is None).

    When T is not divisible by k the first ``T mod k`` intervals are one timestep wider.
    """

    name = "uniform"

    def cluster(self, space: TaskSpace, k: int) -> Clustering:
        """The k equal-width intervals of ``0..T-1``."""
        return Clustering(self.name, equal_intervals(space.num_timesteps, k), None)
