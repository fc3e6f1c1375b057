"""The built-in data sources and the ``ant data`` commands, registered through the plugin hooks."""

from __future__ import annotations

from typing import Any

import click

from ant.data.commands import data_group
from ant.data.sources import DigitsSource, FolderSource, NpzSource
from ant.plugins.hookspecs import hookimpl


@hookimpl
def ant_register_data_sources(register: Any) -> None:
    register("digits", DigitsSource)
    register("folder", FolderSource)
    register("npz", NpzSource)


@hookimpl
def ant_register_commands(cli: click.Group) -> None:
    cli.add_command(data_group)
