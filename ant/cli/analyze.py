"""``ant analyze``: the click group of the analysis commands (Go et al. 2023, Sec. 3)."""

from __future__ import annotations

import click

analyze = click.Group(
    "analyze",
    help=(
        "Analyse trained models as multi-task learners over noise levels: task affinity "
        "between timesteps (paper Fig. 1) and negative transfer between intervals."
    ),
)
