"""The command line as a user meets it first."""

from __future__ import annotations

from click.testing import CliRunner

import ant
from ant.cli import cli

from .helpers import run_ant


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
