"""The exact interval-clustering dynamic programme against brute force, its tie rule and speed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ant.clustering import dp
from ant.clustering.dp import solve_partition
from ant.clustering.intervals import Interval, validate_intervals


def compositions(num_timesteps: int, k: int) -> list[list[Interval]]:
    """Every split of 0..T-1 into k contiguous non-empty intervals, in lexicographic end order."""
    splits = []
    for cuts in itertools.combinations(range(1, num_timesteps), k - 1):
        bounds = [0, *cuts, num_timesteps]
        splits.append([(bounds[i], bounds[i + 1] - 1) for i in range(k)])
    return splits


def brute_force(cost: np.ndarray, k: int) -> tuple[float, list[Interval]]:
    """The least total cost and the optimal split with the lexicographically smallest ends."""
    best: tuple[float, list[Interval]] | None = None
    for split in compositions(cost.shape[0], k):
        total = float(sum(cost[s, e] for s, e in split))
        if best is None or total < best[0]:
            best = (total, split)
    assert best is not None
    return best


@st.composite
def problems(draw: st.DrawFn, integer: bool) -> tuple[np.ndarray, int]:
    """A random T x T cost matrix (T <= 9) and a k in 1..min(T, 4)."""
    size = draw(st.integers(1, 9))
    k = draw(st.integers(1, min(size, 4)))
    values: st.SearchStrategy[float] = (
        st.integers(-3, 3).map(float)
        if integer
        else st.floats(-100, 100, allow_nan=False, allow_infinity=False)
    )
    cells = draw(st.lists(values, min_size=size * size, max_size=size * size))
    return np.array(cells, dtype=np.float64).reshape(size, size), k


@settings(max_examples=300, deadline=None)
@given(problems(integer=True))
def test_integer_costs_match_brute_force_including_the_tie_rule(
    problem: tuple[np.ndarray, int],
) -> None:
    cost, k = problem
    result = solve_partition(cost, k)
    expected_cost, expected_split = brute_force(cost, k)
    assert result.cost == expected_cost
    assert result.intervals == expected_split
    validate_intervals(result.intervals, cost.shape[0])


@settings(max_examples=200, deadline=None)
@given(problems(integer=False))
def test_real_costs_match_brute_force(problem: tuple[np.ndarray, int]) -> None:
    cost, k = problem
    result = solve_partition(cost, k)
    expected_cost, _ = brute_force(cost, k)
    assert result.cost == pytest.approx(expected_cost, rel=1e-12, abs=1e-9)
    assert len(result.intervals) == k
    validate_intervals(result.intervals, cost.shape[0])
    achieved = sum(cost[s, e] for s, e in result.intervals)
    assert achieved == pytest.approx(result.cost, rel=1e-12, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(problems(integer=True), st.integers(1, 20))
def test_solving_in_blocks_gives_the_same_answer(
    problem: tuple[np.ndarray, int], block: int
) -> None:
    cost, k = problem
    whole = solve_partition(cost, k)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dp, "BLOCK_ELEMENTS", block)
        assert solve_partition(cost, k) == whole


def test_a_cost_function_gives_the_same_answer_as_its_matrix() -> None:
    rng = np.random.default_rng(0)
    size = 40
    table = rng.normal(size=(size, size))

    def cost(start: np.ndarray, end: np.ndarray) -> np.ndarray:
        return table[start, end]

    assert solve_partition(cost, 6, size) == solve_partition(table, 6)


def test_ties_resolve_to_the_earliest_boundaries() -> None:
    # Every interval costs 1, so every split into 3 intervals ties: the earliest ends win.
    assert solve_partition(np.ones((6, 6)), 3).intervals == [(0, 0), (1, 1), (2, 5)]
    # Width-dependent costs where widths (1, 3) and (3, 1) tie: (1, 3) has the earlier end.
    widths = np.subtract.outer(np.arange(4), np.arange(4)).T + 1
    table = np.where(widths % 2 == 1, 1.0, 5.0)
    assert solve_partition(table, 2).intervals == [(0, 0), (1, 3)]


def test_the_lower_triangle_of_the_matrix_is_ignored() -> None:
    table = np.triu(np.full((5, 5), 2.0))
    table[np.tril_indices(5, -1)] = -1e9
    assert solve_partition(table, 5).cost == 10.0


def test_one_interval_and_one_timestep_per_interval() -> None:
    table = np.arange(25, dtype=float).reshape(5, 5)
    assert solve_partition(table, 1).intervals == [(0, 4)]
    assert solve_partition(table, 1).cost == 4.0
    assert solve_partition(table, 5).intervals == [(t, t) for t in range(5)]
    assert solve_partition(table, 5).cost == float(np.trace(table))


@pytest.mark.parametrize("k", [0, -1, 6, 2.0, True])
def test_k_outside_one_to_t_is_a_clear_value_error(k: object) -> None:
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.5"):
        solve_partition(np.zeros((5, 5)), k)  # type: ignore[arg-type]


def test_bad_costs_are_value_errors() -> None:
    with pytest.raises(ValueError, match="square"):
        solve_partition(np.zeros((3, 4)), 2)
    with pytest.raises(ValueError, match="does not match"):
        solve_partition(np.zeros((3, 3)), 2, num_timesteps=4)
    with pytest.raises(ValueError, match="num_timesteps is required"):
        solve_partition(lambda s, e: s + e, 2)
    nan = np.zeros((3, 3))
    nan[0, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        solve_partition(nan, 1)


def test_t_1000_k_5_evaluates_the_cost_in_one_vectorised_call() -> None:
    """What makes T = 1000 fast: the cost function sees every (start, end) pair in one numpy
    call, not one Python call per pair (timings: benchmarks/clustering_speed.py)."""
    values = np.arange(1000, dtype=np.float64)
    prefix = np.concatenate(([0.0], np.cumsum(values)))
    shapes = []

    def cost(start: np.ndarray, end: np.ndarray) -> np.ndarray:
        shapes.append(np.broadcast(start, end).shape)
        mid = (start + end) // 2
        above = prefix[end + 1] - prefix[mid + 1] - (end - mid) * values[mid]
        below = (mid - start) * values[mid] - (prefix[mid] - prefix[start])
        return above + below

    result = solve_partition(cost, 5, 1000)
    assert result.cost == 50_000.0
    assert shapes == [(1000, 1000)]
