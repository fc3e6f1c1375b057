"""``ant plot``: metric curves of two tiny training runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from ant.cli import cli
from ant.core.runtime import Runtime
from ant.evaluation.plot import read_series
from ant.recipe import load_recipe
from ant.training.loop import fit

from .helpers import assert_one_line_error

RECIPE = """
model: {{name: DiT-Micro/2, input_size: 8, in_channels: 1, num_classes: 10}}
diffusion: {{timesteps: 100}}
data: {{shards: {shards}, num_workers: 0, shuffle_buffer: 50}}
clustering: {{k: 3}}
method: {{name: {method}}}
train: {{steps: 6, global_batch_size: 12, log_every: 1, ckpt_every: 100, seed: {seed}}}
sample: {{num: 4, steps: 2}}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, digits_shards: Path) -> list[Path]:
    root = tmp_path_factory.mktemp("plot")
    ctx = Runtime()
    made = []
    for seed, method in ((0, "vanilla"), (1, "uw")):
        path = root / f"{method}.yaml"
        path.write_text(RECIPE.format(shards=digits_shards, method=method, seed=seed))
        run = root / method
        fit(load_recipe(str(path)), run, ctx, show=False)
        with (run / "metrics.jsonl").open("a") as handle:
            handle.write(json.dumps({"step": 6, "eval/fd": 3.5 - seed}) + "\n")
        made.append(run)
    return made


def plot(*args: object) -> Result:
    return CliRunner().invoke(cli, ["plot", *(str(a) for a in args)])


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_scalar_and_per_cluster_curves_of_two_runs(runs: list[Path], tmp_path: Path) -> None:
    loss, clusters = tmp_path / "loss.png", tmp_path / "clusters.png"
    result = plot(*runs, "--metric", "loss", "--out", loss, "--log-y")
    assert result.exit_code == 0, result.output
    assert str(loss) in result.output
    result = plot(*runs, "--metric", "cluster_weight", "--out", clusters)
    assert result.exit_code == 0, result.output
    one_panel, two_panels = png_size(loss), png_size(clusters)
    assert two_panels[0] > 1.5 * one_panel[0], "one panel per run for per-cluster metrics"
    assert plot(*runs, "--metric", "fd", "--out", tmp_path / "fd.png").exit_code == 0
    assert plot(*runs, "--metric", "cluster_loss/2", "--out", tmp_path / "c2.png").exit_code == 0


def test_series_find_eval_metrics_and_cluster_entries(runs: list[Path]) -> None:
    fd = read_series(runs[0], "fd")
    assert (fd.key, fd.steps, fd.values) == ("eval/fd", [6], [3.5])
    losses = read_series(runs[1], "cluster_loss")
    assert losses.per_cluster and len(losses.values[0]) == 3
    assert losses.steps == list(range(1, 7))
    second = read_series(runs[1], "cluster_loss/1")
    assert second.values == [values[1] for values in losses.values]


def test_unknown_metric_and_missing_run_are_one_line_errors(
    runs: list[Path], tmp_path: Path
) -> None:
    unknown = plot(*runs, "--metric", "fdd", "--out", tmp_path / "x.png")
    assert unknown.exit_code == 2
    assert_one_line_error(unknown.stderr, "logged no 'fdd'", "cluster_loss", "loss")
    missing = plot(runs[0], tmp_path / "nothing", "--out", tmp_path / "x.png")
    assert missing.exit_code == 2
    assert_one_line_error(missing.stderr, "nothing", "metrics.jsonl")


def test_conflict_figure_of_a_run_with_the_gradient_monitor(
    tmp_path: Path, digits_shards: Path
) -> None:
    """UW with train.conflict_every=2 logs the cosine matrix on steps 2, 4, 6 (and every logged
    step in between is plain); `ant plot RUN --conflict` draws them."""
    path = tmp_path / "uw.yaml"
    path.write_text(RECIPE.format(shards=digits_shards, method="uw", seed=0))
    recipe = load_recipe(str(path), ["train.conflict_every=2", "train.log_every=3"])
    ctx = Runtime()
    run = tmp_path / "run"
    fit(recipe, run, ctx, show=False)
    series = read_series(run, "conflict")
    assert series.steps == [2, 4, 6]
    for matrix in series.values:
        cosines = torch.tensor(matrix)
        assert cosines.shape == (3, 3)
        assert torch.allclose(cosines, cosines.T, atol=1e-6)
        assert torch.allclose(cosines.diagonal(), torch.ones(3), atol=1e-5)
        assert bool((cosines.abs() <= 1 + 1e-5).all())
    assert read_series(run, "conflict_first_last").values == [m[0][2] for m in series.values]
    out = tmp_path / "conflict.png"
    result = plot(run, "--conflict", "--out", out)
    assert result.exit_code == 0, result.output
    assert png_size(out)[0] > 400
    twice = plot(run, run, "--conflict")
    assert twice.exit_code == 2
    assert "exactly one RUN" in twice.output
