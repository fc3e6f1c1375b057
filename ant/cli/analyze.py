"""``ant analyze``: the click group of the analysis commands (Go et al. 2023, Sec. 3)."""

from __future__ import annotations

import click

from ant.cli import LazyCommand, LazyGroup


@click.group("analyze", cls=LazyGroup)
def analyze() -> None:
    """Analyse trained models as multi-task learners over noise levels: task affinity between
    timesteps (paper Fig. 1) and negative transfer between intervals."""


analyze.add_command(LazyCommand("affinity", "ant.cli.affinity:affinity_command"))
analyze.add_command(LazyCommand("ntg", "ant.cli.ntg:ntg_command"))
