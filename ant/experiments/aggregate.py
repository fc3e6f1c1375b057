"""Pure aggregation of a sweep: eval curves, seed statistics, first-reach steps, flattening.

Every function here takes plain numbers or ``metrics.jsonl`` records (dicts) and returns plain
numbers, so the results table can be checked against hand-computed answers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EVAL_PREFIX = "eval/"
LOWER_IS_BETTER = frozenset({"fd", "fid", "kd", "kid", "kd_std", "kid_std"})
"""Metrics where smaller is better; every other eval metric (accuracy, coverage, ...) is larger."""
NOT_METRICS = frozenset({"seconds"})
"""``eval/`` keys that are not quality metrics."""


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better (FD, FID, KD, KID)."""
    return metric in LOWER_IS_BETTER


def eval_metrics(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The names of the ``eval/NAME`` quality metrics in ``records``, in first-seen order."""
    names: dict[str, None] = {}
    for record in records:
        for key in record:
            if key.startswith(EVAL_PREFIX) and key[len(EVAL_PREFIX) :] not in NOT_METRICS:
                names.setdefault(key[len(EVAL_PREFIX) :], None)
    return list(names)


def eval_curve(records: Iterable[Mapping[str, Any]], metric: str) -> dict[int, float]:
    """``step -> value`` of ``eval/<metric>`` in ``metrics.jsonl`` records, sorted by step.

    A later record of the same step replaces an earlier one (a repaired evaluation appended at
    the end of the file); records without a step and non-finite values are left out.
    """
    key = f"{EVAL_PREFIX}{metric}"
    curve: dict[int, float] = {}
    for record in records:
        value = record.get(key)
        if "step" not in record or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if math.isfinite(value):
            curve[int(record["step"])] = float(value)
    return dict(sorted(curve.items()))


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (n - 1; ``None`` for one value), min and max of values."""

    mean: float
    std: float | None
    minimum: float
    maximum: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    """The :class:`Summary` of ``values`` (at least one).

    >>> summarize([1.0, 2.0, 3.0])
    Summary(mean=2.0, std=1.0, minimum=1.0, maximum=3.0, n=3)
    """
    if not values:
        raise ValueError("summarize needs at least one value")
    numbers = [float(v) for v in values]
    std = statistics.stdev(numbers) if len(numbers) > 1 else None
    return Summary(statistics.fmean(numbers), std, min(numbers), max(numbers), len(numbers))


@dataclass(frozen=True)
class SeedCurve:
    """A metric's curve over seeds: at each step the :class:`Summary` of the seeds' values."""

    steps: list[int]
    points: list[Summary]

    @property
    def mean(self) -> list[float]:
        """The seed mean at each step."""
        return [p.mean for p in self.points]


def seed_curve(curves: Sequence[Mapping[int, float]]) -> SeedCurve:
    """Combine per-seed ``step -> value`` curves at the steps that every seed evaluated.

    Steps missing from any seed are left out, so every point averages the same seeds.
    """
    if not curves:
        return SeedCurve([], [])
    common = set(curves[0])
    for curve in curves[1:]:
        common &= set(curve)
    steps = sorted(common)
    return SeedCurve(steps, [summarize([curve[s] for curve in curves]) for s in steps])


def first_reach(
    steps: Sequence[int], values: Sequence[float], target: float, *, lower_is_better: bool = True
) -> int | None:
    """The first step whose value reaches ``target`` (``<=`` if lower is better, else ``>=``).

    ``None`` if no value does. Used with a variant's seed-mean curve and the reference variant's
    final mean: "ANT reaches vanilla's final FD at step s".

    >>> first_reach([100, 200, 300], [9.0, 6.0, 4.0], 6.0)
    200
    """
    for step, value in zip(steps, values, strict=True):
        if (value <= target) if lower_is_better else (value >= target):
            return int(step)
    return None


@dataclass(frozen=True)
class Paired:
    """A variant against the reference on the seeds both finished (same seed, same data order
    and initialisation): how many seeds it is better on, and the per-seed differences."""

    seeds: list[int]
    better: int
    differences: list[float]
    """``variant - reference`` per seed, in ``seeds`` order."""

    @property
    def mean_difference(self) -> float:
        """The mean of :attr:`differences`."""
        return statistics.fmean(self.differences)


def paired(
    values: Mapping[int, float], reference: Mapping[int, float], *, lower_is_better: bool = True
) -> Paired | None:
    """Compare final values seed by seed (``seed -> value``); ``None`` without a shared seed.

    Seeds fix the initialisation and the data order, so a per-seed comparison removes the
    variance both runs share; a tie is not better.

    >>> p = paired({0: 20.0, 1: 26.0, 2: 30.0}, {0: 31.0, 1: 25.0, 2: 33.0, 3: 40.0})
    >>> p.seeds, p.better, p.differences, p.mean_difference
    ([0, 1, 2], 2, [-11.0, 1.0, -3.0], -4.333333333333333)
    """
    shared = sorted(set(values) & set(reference))
    if not shared:
        return None
    differences = [values[s] - reference[s] for s in shared]
    sign = 1.0 if lower_is_better else -1.0
    return Paired(shared, sum(sign * d < 0 for d in differences), differences)


def relative_change(steps: Sequence[int], values: Sequence[float], window: float) -> float | None:
    """Relative change of a curve over its last ``window`` fraction of steps.

    The window holds the points with ``step >= (1 - window) * last step``; the change is
    ``|v(first point in window) - v(last point)| / |v(last point)|``. ``None`` when the window
    holds fewer than two points or the last value is 0.

    >>> relative_change([100, 200, 300, 400], [10.0, 6.0, 5.2, 5.0], 0.25)
    0.04
    """
    if not 0.0 < window <= 1.0:
        raise ValueError(f"window must be in (0, 1], got {window}")
    if not steps:
        return None
    start = (1.0 - window) * steps[-1]
    inside = [v for s, v in zip(steps, values, strict=True) if s >= start - 1e-9]
    if len(inside) < 2 or inside[-1] == 0:
        return None
    return round(abs(inside[0] - inside[-1]) / abs(inside[-1]), 12)


def flattened(
    steps: Sequence[int], values: Sequence[float], window: float, tolerance: float
) -> bool | None:
    """Whether the curve has flattened: its :func:`relative_change` over the last ``window``
    of steps is below ``tolerance``. ``None`` when that change is undefined (too few points)."""
    change = relative_change(steps, values, window)
    return None if change is None else change < tolerance


def flattened_at(
    steps: Sequence[int], values: Sequence[float], window: float, tolerance: float
) -> int | None:
    """The first step s from which on the curve stays flat: the curve cut at s, and cut at every
    later evaluated step, is :func:`flattened`. ``None`` if the whole curve is not flattened.

    This is the smallest budget at which a run of this length would have been called flat, and
    longer runs too: the step budget to choose for a comparison. A temporary plateau that the
    curve leaves again (two close values in a row, then a further fall) does not count.

    >>> flattened_at([100, 200, 300, 400], [10.0, 6.0, 5.2, 5.0], 0.25, 0.05)
    400
    >>> flattened_at([100, 200, 300, 400, 500], [10.0, 6.0, 5.9, 4.0, 3.0], 0.25, 0.05) is None
    True
    """
    found = None
    for end in range(len(steps), 0, -1):
        if not flattened(steps[:end], values[:end], window, tolerance):
            break
        found = int(steps[end - 1])
    return found


def seconds_per_step(records: Iterable[Mapping[str, Any]], global_batch_size: int) -> float | None:
    """Median training seconds per step from the ``samples_per_s`` of ``metrics.jsonl`` records.

    ``samples_per_s`` covers the steps since the previous logged step; intervals that contain an
    evaluation or a checkpoint are slower, which the median ignores. ``None`` without records.

    >>> seconds_per_step([{"samples_per_s": 100.0}, {"samples_per_s": 50.0},
    ...                   {"samples_per_s": 200.0}], 100)
    1.0
    """
    times = [
        global_batch_size / float(r["samples_per_s"])
        for r in records
        if isinstance(r.get("samples_per_s"), (int, float)) and r["samples_per_s"] > 0
    ]
    return statistics.median(times) if times else None


def mean_eval_seconds(records: Iterable[Mapping[str, Any]]) -> float | None:
    """Mean ``eval/seconds`` of one evaluation during training; ``None`` without any."""
    times = [
        float(r["eval/seconds"]) for r in records if isinstance(r.get("eval/seconds"), (int, float))
    ]
    return statistics.fmean(times) if times else None
