"""Registers ``ant reproduce`` through the plugin hook."""

from __future__ import annotations

import click

from ant.plugins.hookspecs import hookimpl
from ant.reproduce.commands import reproduce_command


@hookimpl
def ant_register_commands(cli: click.Group) -> None:
    cli.add_command(reproduce_command)
