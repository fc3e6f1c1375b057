"""ant's own commands, added through the same hook as any third-party plugin's commands.

Each is a :class:`~ant.cli.LazyCommand`: its module is imported only when it runs.
"""

from __future__ import annotations

import click

from ant.cli import LazyCommand
from ant.core.hookspecs import hookimpl

COMMANDS: dict[str, str] = {
    "train": "ant.cli.train:train_command",
    "sample": "ant.cli.sample:sample_command",
    "eval": "ant.cli.evaluate:eval_command",
    "plot": "ant.cli.evaluate:plot_command",
    "cluster": "ant.cli.cluster:cluster_command",
    "data": "ant.cli.data:data_group",
    "recipe": "ant.cli.recipe:recipe_group",
    "recipes": "ant.cli.recipe:recipes_command",
    "analyze": "ant.cli.analyze:analyze",
    "reproduce": "ant.cli.reproduce:reproduce_command",
    "plugins": "ant.cli.plugins:plugins_command",
    "runs": "ant.cli.runs:runs_command",
    "export": "ant.cli.export:export_command",
}


@hookimpl
def ant_register_commands(cli: click.Group) -> None:
    for name, target in COMMANDS.items():
        cli.add_command(LazyCommand(name, target))
