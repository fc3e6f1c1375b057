"""Registers ``ant sample`` through the plugin hook, like any third-party command."""

from __future__ import annotations

import click

from ant.plugins.hookspecs import hookimpl
from ant.sampling.commands import sample_command


@hookimpl
def ant_register_commands(cli: click.Group) -> None:
    cli.add_command(sample_command)
