"""``ant cluster``: interval clustering of the timesteps of a noise schedule (Go et al. 2023)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from ant.clustering.objectives import Clustering
from ant.clustering.solve import cluster_tasks
from ant.clustering.space import TaskSpace, load_affinity
from ant.core.errors import AntError
from ant.core.plugins import registry

SCHEDULES = ("linear", "cosine")


@click.command("cluster")
@click.option(
    "--objective",
    required=True,
    help="Clustering objective: snr, timestep, gradient, uniform or one added by a plugin.",
)
@click.option(
    "--k", type=click.IntRange(min=1), default=5, show_default=True, help="Number of clusters."
)
@click.option("--schedule", type=click.Choice(SCHEDULES), default="linear", show_default=True)
@click.option(
    "--timesteps",
    type=click.IntRange(min=2),
    default=1000,
    show_default=True,
    help="Number of diffusion steps T.",
)
@click.option(
    "--affinity",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Task-affinity matrix (.npy, T x T or G x G) for the gradient objective.",
)
@click.option(
    "--space",
    "snr_space",
    type=click.Choice(["log_snr", "snr"]),
    help="What the snr objective measures: log SNR (default) or raw SNR.",
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a PNG of the boundaries over the log-SNR curve.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def cluster_command(
    objective: str,
    k: int,
    schedule: str,
    timesteps: int,
    affinity: Path | None,
    snr_space: str | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Cluster the T timesteps of a noise schedule into K contiguous intervals.

    The interval clustering of ANT (Go et al., NeurIPS 2023, Sec. 4.1), solved exactly by
    dynamic programming; prints each interval (inclusive, 0-indexed) and the total cost.
    """
    entry = registry("objective").get(objective)
    options: dict[str, Any] = {}
    if snr_space is not None:
        if "space" not in entry.parameters() and not entry.accepts_any_option():
            raise AntError(f"--space is an option of objective 'snr', not of '{objective}'")
        options["space"] = snr_space
    matrix = load_affinity(affinity, timesteps) if affinity is not None else None
    space = TaskSpace.from_schedule(schedule, timesteps, matrix)
    start = time.perf_counter()
    result = cluster_tasks(objective, space, k, options)
    seconds = time.perf_counter() - start
    if plot is not None:
        from ant.clustering.plot import Panel, plot_boundaries

        title = f"{schedule} schedule, T = {timesteps}: objective {objective}, k = {k}"
        plot_boundaries(plot, [Panel(title, space.log_snr, result)])
    if as_json:
        record = {
            "objective": objective,
            "k": k,
            "timesteps": timesteps,
            "schedule": schedule,
            "intervals": [[s, e] for s, e in result.intervals],
            "widths": result.widths,
            "cost": result.cost,
            "seconds": seconds,
        }
        click.echo(json.dumps(record, indent=2))
        return
    _print_table(objective, schedule, space.log_snr, result, seconds)
    if plot is not None:
        click.echo(f"plot: {plot}")


def _print_table(
    objective: str, schedule: str, log_snr: np.ndarray, result: Clustering, seconds: float
) -> None:
    from rich.console import Console
    from rich.table import Table

    cost = "none (no optimisation)" if result.cost is None else f"{result.cost:.6g}"
    table = Table(
        title=f"ant cluster: {objective}, k = {result.k}, {schedule}, T = {log_snr.shape[0]}",
        caption=f"total cost {cost}; solved in {seconds * 1000:.1f} ms",
    )
    for column in ("cluster", "start", "end", "width", "log SNR at start", "log SNR at end"):
        table.add_column(column, justify="right")
    for index, (start, end) in enumerate(result.intervals):
        table.add_row(
            str(index + 1),
            str(start),
            str(end),
            str(end - start + 1),
            f"{log_snr[start]:.3f}",
            f"{log_snr[end]:.3f}",
        )
    Console().print(table)
