"""Clustering objectives: brute force, the paper's reference clusters, affinity files, plugins."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ant.clustering import (
    Clustering,
    GradientObjective,
    IntervalObjective,
    SNRObjective,
    TaskSpace,
    TimestepObjective,
    UniformObjective,
    cluster_tasks,
    equal_intervals,
    expand_affinity,
    load_affinity,
    solve_partition,
)
from ant.clustering.dp import IntervalCost
from ant.clustering.intervals import Interval
from ant.clustering.objectives import median_deviation_cost
from ant.core.errors import AntError
from ant.core.plugins import build_plugin_manager, collect, hookimpl
from ant.recipe import load_recipe
from ant.recipe.build import build_clustering, build_intervals


def deviation(values: np.ndarray, start: int, end: int) -> float:
    """sum_{t in [start, end]} |v_t - v_median| with the lower median index, directly."""
    centre = values[(start + end) // 2]
    return float(sum(abs(values[t] - centre) for t in range(start, end + 1)))


def affinity_cost(matrix: np.ndarray, start: int, end: int) -> float:
    """- sum_{t in [start, end]} A[centre, t], directly."""
    centre = (start + end) // 2
    return -float(sum(matrix[centre, t] for t in range(start, end + 1)))


def brute_force(num_timesteps: int, k: int, cost: Any) -> float:
    """The least total cost over every split of 0..T-1 into k intervals."""
    best = np.inf
    for cuts in itertools.combinations(range(1, num_timesteps), k - 1):
        bounds = [0, *cuts, num_timesteps]
        best = min(best, sum(cost(bounds[i], bounds[i + 1] - 1) for i in range(k)))
    return float(best)


def total(cost: IntervalCost, intervals: list[Interval]) -> float:
    return float(sum(float(cost(np.array(s), np.array(e))) for s, e in intervals))


def check_against_brute_force(space: TaskSpace, k: int, affinity: np.ndarray) -> None:
    """Every built-in DP objective reaches the brute-force optimum of its direct definition."""
    size = space.num_timesteps
    direct = {
        "timestep": lambda s, e: deviation(np.arange(size, dtype=float), s, e),
        "log_snr": lambda s, e: deviation(space.log_snr, s, e),
        "snr": lambda s, e: deviation(np.exp(space.log_snr), s, e),
        "gradient": lambda s, e: affinity_cost(affinity, s, e),
    }
    objectives: dict[str, IntervalObjective] = {
        "timestep": TimestepObjective(),
        "log_snr": SNRObjective("log_snr"),
        "snr": SNRObjective("snr"),
        "gradient": GradientObjective(),
    }
    for name, objective in objectives.items():
        result = objective.cluster(space, k)
        expected = brute_force(size, k, direct[name])
        assert result.cost == pytest.approx(expected, rel=1e-9, abs=1e-9), name
        assert sum(direct[name](s, e) for s, e in result.intervals) == pytest.approx(
            expected, rel=1e-9, abs=1e-9
        )
        assert result.k == k and sum(result.widths) == size


@settings(max_examples=60, deadline=None)
@given(size=st.integers(2, 10), k=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_every_objective_matches_brute_force(size: int, k: int, seed: int) -> None:
    affinity = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(size, size))
    check_against_brute_force(
        TaskSpace.from_schedule("cosine", size, affinity), min(k, size), affinity
    )


@pytest.mark.parametrize("k", [2, 3])
def test_every_objective_matches_brute_force_on_the_linear_schedule(k: int) -> None:
    affinity = np.random.default_rng(k).uniform(-1.0, 1.0, size=(24, 24))
    check_against_brute_force(TaskSpace.from_schedule("linear", 24, affinity), k, affinity)


def test_schedules_with_betas_of_one_are_rejected() -> None:
    with pytest.raises(AntError, match="linear noise schedule with 20 timesteps"):
        TaskSpace.from_schedule("linear", 20)


def test_prefix_sum_costs_equal_the_definitions() -> None:
    space = TaskSpace.from_schedule("cosine", 60)
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(60, 60))
    fast = {
        "t": median_deviation_cost(np.arange(60.0)),
        "s": median_deviation_cost(space.log_snr),
        "a": GradientObjective().interval_cost(TaskSpace.from_schedule("cosine", 60, matrix)),
    }
    for start in range(60):
        for end in range(start, 60):
            s, e = np.array(start), np.array(end)
            assert float(fast["t"](s, e)) == deviation(np.arange(60.0), start, end)
            assert float(fast["s"](s, e)) == pytest.approx(deviation(space.log_snr, start, end))
            assert float(fast["a"](s, e)) == pytest.approx(affinity_cost(matrix, start, end))


def test_cosine_log_snr_clusters_match_the_reference() -> None:
    result = SNRObjective().cluster(TaskSpace.from_schedule("cosine", 1000), 5)
    assert result.intervals == [(0, 132), (133, 371), (372, 652), (653, 880), (881, 999)]
    assert result.objective == "snr"


def test_linear_log_snr_clusters_match_the_reference_within_one_step() -> None:
    result = SNRObjective().cluster(TaskSpace.from_schedule("linear", 1000), 5)
    reference = [(0, 152), (153, 393), (394, 623), (624, 822), (823, 999)]
    for (start, end), (ref_start, ref_end) in zip(result.intervals, reference, strict=True):
        assert abs(start - ref_start) <= 1 and abs(end - ref_end) <= 1


def test_raw_snr_degenerates_onto_the_first_timesteps() -> None:
    result = SNRObjective("snr").cluster(TaskSpace.from_schedule("cosine", 1000), 5)
    assert result.intervals == [(0, 0), (1, 3), (4, 10), (11, 35), (36, 999)]
    cost = median_deviation_cost(np.exp(TaskSpace.from_schedule("cosine", 1000).log_snr))
    quoted = [(0, 0), (1, 3), (4, 11), (12, 36), (37, 999)]
    assert result.cost is not None
    assert result.cost == pytest.approx(total(cost, result.intervals))
    assert result.cost < total(cost, quoted)


def test_timestep_optimum_costs_as_much_as_equal_widths() -> None:
    space = TaskSpace.from_schedule("linear", 1000)
    result = TimestepObjective().cluster(space, 5)
    cost = median_deviation_cost(np.arange(1000.0))
    assert result.cost == total(cost, equal_intervals(1000, 5)) == 50_000.0
    assert result.widths == [199, 199, 200, 201, 201]


def test_gradient_objective_recovers_affinity_blocks() -> None:
    blocks = [(0, 14), (15, 44), (45, 59), (60, 99)]
    matrix = np.full((100, 100), -0.2)
    for start, end in blocks:
        matrix[start : end + 1, start : end + 1] = 1.0
    matrix += np.random.default_rng(0).normal(scale=0.05, size=matrix.shape)
    result = GradientObjective().cluster(TaskSpace.from_schedule("cosine", 100, matrix), 4)
    assert result.intervals == blocks


def test_group_level_affinity_is_repeated_over_its_timesteps() -> None:
    groups = np.arange(16, dtype=float).reshape(4, 4)
    full = expand_affinity(groups, 12)
    assert full.shape == (12, 12)
    assert full[0, 0] == full[2, 2] == 0.0 and full[3, 11] == 7.0 and full[11, 0] == 12.0
    assert np.array_equal(expand_affinity(full, 12), full)
    with pytest.raises(ValueError, match="does not fit 12 timesteps"):
        expand_affinity(np.zeros((5, 5)), 12)
    with pytest.raises(ValueError, match="square"):
        expand_affinity(np.zeros((4, 3)), 12)
    with pytest.raises(ValueError, match="NaN"):
        expand_affinity(np.full((4, 4), np.nan), 12)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "does not exist"),
        (np.zeros((7, 7)), "does not fit 100 timesteps"),
        (np.full((10, 10), np.nan), "NaN"),
        (np.array(["a", "b"]), "not real numbers"),
        (b"not an array", "not a readable .npy array"),
    ],
)
def test_bad_affinity_files_are_one_line_errors_naming_file_and_fix(
    tmp_path: Path, content: Any, fragment: str
) -> None:
    path = tmp_path / "affinity.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content)
    with pytest.raises(AntError) as info:
        load_affinity(path, 100)
    message = str(info.value)
    assert "\n" not in message
    for part in (str(path), fragment, "ant analyze affinity"):
        assert part in message


def test_gradient_objective_without_affinity_says_how_to_get_one() -> None:
    space = TaskSpace.from_schedule("cosine", 100)
    with pytest.raises(ValueError, match=r"clustering\.affinity"):
        GradientObjective().cluster(space, 3)
    with pytest.raises(AntError, match=r"^objective 'gradient': .*ant analyze affinity"):
        cluster_tasks("gradient", space, 3)


def test_uniform_objective_returns_equal_widths_without_a_cost() -> None:
    result = UniformObjective().cluster(TaskSpace.from_schedule("linear", 1000), 3)
    assert result == Clustering("uniform", [(0, 333), (334, 666), (667, 999)], None)
    assert result.to_dict()["cost"] is None


def test_k_outside_one_to_t_is_a_one_line_error() -> None:
    space = TaskSpace.from_schedule("cosine", 10)
    with pytest.raises(AntError, match=r"objective 'snr': k must be an integer in 1\.\.10"):
        cluster_tasks("snr", space, 11)
    with pytest.raises(AntError, match=r"objective 'uniform': k must be in 1\.\.10"):
        cluster_tasks("uniform", space, 0)


def test_snr_values_must_be_monotone_and_the_space_known() -> None:
    with pytest.raises(ValueError, match="monotone"):
        median_deviation_cost(np.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="space must be"):
        SNRObjective("sigma")  # type: ignore[arg-type]


class Widest(IntervalObjective):
    """Third-party test objective: prefers one wide last interval."""

    name = "widest"

    def interval_cost(self, space: TaskSpace) -> IntervalCost:
        def cost(start: np.ndarray, end: np.ndarray) -> np.ndarray:
            return np.where(end == space.num_timesteps - 1, 0.0, 1.0) + 0.0 * start

        return cost


class ThirdParty:
    @hookimpl
    def ant_register_objectives(self, register: Any) -> None:
        register("widest", Widest)


def test_a_third_party_objective_plugs_in_through_the_hook() -> None:
    manager = build_plugin_manager(autoload=False, extra=[(ThirdParty(), "widest", "ant-widest")])
    objectives = collect(manager, "objective")
    assert {"uniform", "timestep", "snr", "gradient", "widest"} <= set(objectives.names())
    assert objectives.get("widest").distribution == "ant-widest"
    result = objectives.build("widest").cluster(TaskSpace.from_schedule("cosine", 10), 3)
    assert result.intervals == [(0, 0), (1, 1), (2, 9)] and result.cost == 2.0


def test_an_objective_returning_plain_intervals_is_reported_as_incompatible(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class OldStyle:
        def cluster(self, space: TaskSpace, k: int) -> list[Interval]:
            return equal_intervals(space.num_timesteps, k)

    class Plugin:
        @hookimpl
        def ant_register_objectives(self, register: Any) -> None:
            register("old", OldStyle)

    manager = build_plugin_manager(autoload=False, extra=[(Plugin(), "old", "ant-old")])
    monkeypatch.setattr("ant.clustering.solve.registry", lambda kind: collect(manager, kind))
    with pytest.raises(AntError, match=r"returned a list, not an ant\.clustering\.Clustering"):
        cluster_tasks("old", TaskSpace.from_schedule("cosine", 10), 2)


def test_recipes_build_clusters_from_schedule_options_and_affinity(tmp_path: Path) -> None:
    recipe = load_recipe(
        "digits_dit",
        ["diffusion.schedule=cosine", "diffusion.timesteps=1000", "clustering.objective=snr"],
    )
    assert build_intervals(recipe) == [(0, 132), (133, 371), (372, 652), (653, 880), (881, 999)]
    raw = load_recipe("digits_dit", ["clustering.objective=snr", "clustering.space=snr"])
    assert build_clustering(raw).widths[0] == 1
    with pytest.raises(AntError, match=r"clustering\.space"):
        load_recipe("digits_dit", ["clustering.objective=snr", "clustering.space=sigma"])

    blocks = np.kron(np.eye(4), np.ones((25, 25)))
    np.save(tmp_path / "affinity.npy", blocks)
    gradient = load_recipe(
        "digits_dit",
        [
            "diffusion.timesteps=100",
            "clustering.objective=gradient",
            "clustering.k=4",
            f"clustering.affinity={tmp_path / 'affinity.npy'}",
        ],
    )
    assert build_intervals(gradient) == [(0, 24), (25, 49), (50, 74), (75, 99)]
    missing = gradient.model_copy(
        update={"clustering": gradient.clustering.model_copy(update={"affinity": "nope.npy"})}
    )
    with pytest.raises(AntError, match=r"affinity file nope\.npy does not exist"):
        build_intervals(missing)
    unset = gradient.model_copy(
        update={"clustering": gradient.clustering.model_copy(update={"affinity": None})}
    )
    with pytest.raises(AntError, match=r"^clustering\.objective 'gradient': .*affinity"):
        build_intervals(unset)


def test_solver_and_objective_agree_on_dense_costs() -> None:
    space = TaskSpace.from_schedule("cosine", 50)
    cost = SNRObjective().interval_cost(space)
    starts, ends = np.meshgrid(np.arange(50), np.arange(50), indexing="ij")
    dense = np.where(ends >= starts, cost(starts, ends), 0.0)
    assert solve_partition(dense, 4).intervals == SNRObjective().cluster(space, 4).intervals
