"""``ant cluster`` as a user runs it, and the clusters.json a training run writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from ant.cli import cli
from ant.clustering import CLUSTERS_FILE
from ant.core.runtime import Runtime
from ant.recipe import load_recipe
from ant.training.loop import fit

from .helpers import assert_one_line_error, run_ant

JSON_KEYS = {"objective", "k", "timesteps", "schedule", "intervals", "widths", "cost", "seconds"}


def test_json_output_has_the_documented_schema() -> None:
    result = run_ant("cluster", "--objective", "snr", "--k", "5", "--schedule", "cosine", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert set(record) == JSON_KEYS
    assert record["objective"] == "snr" and record["k"] == 5
    assert record["timesteps"] == 1000 and record["schedule"] == "cosine"
    assert record["intervals"] == [[0, 132], [133, 371], [372, 652], [653, 880], [881, 999]]
    assert record["widths"] == [133, 239, 281, 228, 119]
    assert isinstance(record["cost"], float) and record["cost"] > 0
    assert 0 < record["seconds"] < 1.0


def test_uniform_json_has_a_null_cost() -> None:
    result = CliRunner().invoke(
        cli, ["cluster", "--objective", "uniform", "--k", "4", "--timesteps", "100", "--json"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["cost"] is None and record["widths"] == [25, 25, 25, 25]


def test_table_lists_every_interval_and_the_cost(tmp_path: Path) -> None:
    plot = tmp_path / "boundaries.png"
    result = CliRunner().invoke(
        cli, ["cluster", "--objective", "timestep", "--k", "5", "--plot", str(plot)]
    )
    assert result.exit_code == 0, result.output
    for fragment in ("0 │ 198", "799 │ 999", "total cost 50000", str(plot)):
        assert fragment in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradient_objective_reads_a_group_level_affinity(tmp_path: Path) -> None:
    path = tmp_path / "affinity.npy"
    np.save(path, np.kron(np.eye(4), np.ones((5, 5))))
    result = CliRunner().invoke(
        cli,
        ["cluster", "--objective", "gradient", "--k", "4", "--affinity", str(path), "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["widths"] == [250, 250, 250, 250]


def test_unknown_objective_is_the_registry_one_line_error() -> None:
    result = run_ant("cluster", "--objective", "snrr")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "unknown objective 'snrr'", "did you mean 'snr'?")


def test_bad_affinity_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "affinity.npy"
    np.save(path, np.zeros((3, 3)))
    result = run_ant("cluster", "--objective", "gradient", "--affinity", str(path))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(path), "does not fit", "ant analyze affinity")


def test_options_and_k_that_do_not_fit_are_one_line_errors() -> None:
    runner = CliRunner()
    space = runner.invoke(cli, ["cluster", "--objective", "timestep", "--space", "snr"])
    assert space.exit_code == 2
    assert_one_line_error(space.output, "--space is an option of objective 'snr'")
    too_many = runner.invoke(
        cli,
        ["cluster", "--objective", "snr", "--k", "11", "--timesteps", "10", "--schedule", "cosine"],
    )
    assert too_many.exit_code == 2
    assert_one_line_error(too_many.output, "objective 'snr': k must be an integer in 1..10")


def test_training_run_writes_clusters_json(tmp_path: Path, digits_shards: Path) -> None:
    recipe = load_recipe(
        "digits_dit",
        [
            f"data.shards={digits_shards}",
            "model.name=DiT-Micro/2",
            "data.shuffle_buffer=100",
            "clustering.objective=timestep",
            "train.steps=2",
            "train.global_batch_size=10",
            "train.log_every=1",
            "train.ckpt_every=1000",
            "sample.num=10",
            "sample.steps=2",
            "sample.sampler=ddim",
        ],
    )
    ctx = Runtime()
    fit(recipe, tmp_path / "run", ctx, show=False)
    record = json.loads((tmp_path / "run" / CLUSTERS_FILE).read_text())
    assert record == {
        "objective": "timestep",
        "k": 5,
        "intervals": [[0, 198], [199, 397], [398, 597], [598, 798], [799, 999]],
        "widths": [199, 199, 200, 201, 201],
        "cost": 50_000.0,
        "sampling": "stratified",
        "timesteps": 1000,
        "schedule": "cosine",
    }
