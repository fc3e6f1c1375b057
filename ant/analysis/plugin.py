"""The ``ant analyze`` command group, registered through the plugin hooks."""

from __future__ import annotations

import click

from ant.analysis.affinity_command import affinity_command
from ant.analysis.group import analyze
from ant.analysis.ntg_command import ntg_command
from ant.plugins.hookspecs import hookimpl


@hookimpl
def ant_register_commands(cli: click.Group) -> None:
    analyze.add_command(affinity_command)
    analyze.add_command(ntg_command)
    cli.add_command(analyze)
