"""ant's own commands, added through the same hook as any third-party plugin's commands."""

from __future__ import annotations

import click

from ant.cli.affinity import affinity_command
from ant.cli.analyze import analyze
from ant.cli.cluster import cluster_command
from ant.cli.data import data_group
from ant.cli.evaluate import eval_command, plot_command
from ant.cli.ntg import ntg_command
from ant.cli.plugins import plugins_command
from ant.cli.recipe import recipe_group, recipes_command
from ant.cli.reproduce import reproduce_command
from ant.cli.sample import sample_command
from ant.cli.train import train_command
from ant.core.hookspecs import hookimpl


@hookimpl
def ant_register_commands(cli: click.Group) -> None:
    analyze.add_command(affinity_command)
    analyze.add_command(ntg_command)
    for command in (
        train_command,
        sample_command,
        eval_command,
        plot_command,
        cluster_command,
        data_group,
        recipe_group,
        recipes_command,
        analyze,
        reproduce_command,
        plugins_command,
    ):
        cli.add_command(command)
