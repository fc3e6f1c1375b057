"""The command line as a user meets it first."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import ant
from ant.cli import cli

from .helpers import assert_one_line_error, run_ant


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert ant.__version__ in result.output


def test_help_lists_plugin_commands() -> None:
    result = run_ant("--help")
    assert result.returncode == 0, result.stderr
    for command in ("plugins", "recipe", "recipes", "data"):
        assert command in result.stdout


def test_recipes_lists_shipped_recipes() -> None:
    result = CliRunner().invoke(cli, ["recipes"])
    assert result.exit_code == 0, result.output
    assert "digits_dit" in result.output


def test_unknown_command_exits_2() -> None:
    result = run_ant("trian")
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_shared_flags_stand_for_recipe_keys_that_exist() -> None:
    from typing import get_args

    from ant.cli.options import FLAG_KEYS, SAMPLERS, flag_overrides
    from ant.recipe.schema import Recipe, SampleConfig

    assert get_args(SampleConfig.model_fields["sampler"].annotation) == SAMPLERS
    for key in FLAG_KEYS.values():
        section, field = key.split(".")
        assert field in type(getattr(Recipe(), section)).model_fields, key
    given = {"cfg_scale": 1.5, "clip_x0": False, "steps": None, "metrics": ["fd", "kid"]}
    assert flag_overrides(given) == [
        "sample.cfg_scale=1.5",
        "sample.clip_x0=false",
        'eval.metrics=["fd", "kid"]',
    ]


RUN_RECIPE = """
model: {{name: DiT-Micro/2, input_size: 8, in_channels: 1, num_classes: 10}}
diffusion: {{timesteps: 100, schedule: cosine}}
data: {{shards: {shards}, num_workers: 0, shuffle_buffer: 100}}
clustering: {{objective: snr, k: 2}}
method: {{name: uw}}
train: {{steps: 3, global_batch_size: 10, log_every: 2, ckpt_every: 3}}
sample: {{num: 2, steps: 2, sampler: ddim}}
"""


def test_ant_runs_lists_trained_runs_with_their_last_step_and_loss(
    tmp_path: Path, digits_shards: Path
) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RUN_RECIPE.format(shards=digits_shards))
    root = tmp_path / "runs"
    trained = run_ant("train", str(recipe), "--run-dir", str(root / "a"), "--no-progress")
    assert trained.returncode == 0, trained.stderr
    listed = run_ant("runs", str(root), "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["run"] == "a" and row["recipe"] == "tiny"
    assert row["method"] == "uw (snr, k=2)"
    assert row["step"] == 3 and row["total_steps"] == 3
    assert isinstance(row["loss"], float) and row["eval"] == {}
    table = run_ant("runs", str(root))
    assert table.returncode == 0 and "3/3" in table.stdout and "uw (snr, k=2)" in table.stdout
    missing = run_ant("runs", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert_one_line_error(missing.stderr, "nowhere is not a folder")


def test_plugins_lists_the_options_a_recipe_can_set() -> None:
    result = CliRunner().invoke(cli, ["plugins", "--kind", "model", "--json", "--options"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row["options"] for row in json.loads(result.output)}
    assert "routing" in rows["DiT-L/2"].split(", ")
    assert "learn_sigma" not in rows["DiT-L/2"], "ant passes it from diffusion.learn_sigma"
    assert "routing" not in rows["ADM-T"]
