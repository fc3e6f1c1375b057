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
