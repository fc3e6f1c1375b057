"""Registers the recipe commands through the plugin hook, like any third-party command."""

from __future__ import annotations

import click

from ant.plugins.hookspecs import hookimpl
from ant.recipes.commands import recipe_group, recipes_command


@hookimpl
def ant_register_commands(cli: click.Group) -> None:
    cli.add_command(recipe_group)
    cli.add_command(recipes_command)
