"""``ant runs [DIR]``: the training runs under a folder and where each one stands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ant.core.errors import AntError
from ant.core.logbook import read_metrics
from ant.recipe.io import RESOLVED_RECIPE
from ant.recipe.yaml_io import parse_yaml

EVAL_PREFIX = "eval/"


def _method(recipe: dict[str, Any]) -> str:
    method = (recipe.get("method") or {}).get("name", "?")
    weighting = (recipe.get("weighting") or {}).get("name", "none")
    clustering = recipe.get("clustering") or {}
    objective = f"{clustering.get('objective', '?')}, k={clustering.get('k', '?')}"
    described = method if method == "vanilla" else f"{method} ({objective})"
    return described if weighting == "none" else f"{described} + {weighting}"


def run_row(run_dir: Path, root: Path) -> dict[str, Any]:
    """One run: its recipe name and method, its last logged step, loss and evaluation."""
    recipe = parse_yaml((run_dir / RESOLVED_RECIPE).read_text(), str(run_dir / RESOLVED_RECIPE))
    recipe = recipe if isinstance(recipe, dict) else {}
    records = read_metrics(run_dir)
    losses = [r for r in records if "loss" in r]
    evals = [r for r in records if any(key.startswith(EVAL_PREFIX) for key in r)]
    last_eval = evals[-1] if evals else {}
    return {
        "run": str(run_dir.relative_to(root)) if run_dir != root else ".",
        "recipe": recipe.get("name", "?"),
        "method": _method(recipe),
        "step": max((int(r["step"]) for r in records if "step" in r), default=None),
        "total_steps": (recipe.get("train") or {}).get("steps"),
        "loss": losses[-1]["loss"] if losses else None,
        "eval_step": last_eval.get("step"),
        "eval": {
            key.removeprefix(EVAL_PREFIX): value
            for key, value in last_eval.items()
            if key.startswith(EVAL_PREFIX) and isinstance(value, int | float)
        },
    }


def find_runs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (a folder holding a resolved ``recipe.yaml``)."""
    if not root.is_dir():
        raise AntError(f"{root} is not a folder: give the folder that holds the run directories")
    return sorted(path.parent for path in root.rglob(RESOLVED_RECIPE))


@click.command("runs")
@click.argument("folder", default="runs", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def runs_command(folder: Path, as_json: bool) -> None:
    """List the runs under FOLDER (default runs/): recipe, method, step, last loss and eval.

    A run is a folder with a recipe.yaml written by `ant train`; its step, loss and
    evaluation metrics are the last ones in its metrics.jsonl.
    """
    rows = [run_row(path, folder) for path in find_runs(folder)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no runs under {folder}")
        return
    table = Table(title=f"runs under {folder}")
    for column in ("run", "recipe", "method", "step", "loss", "last eval"):
        table.add_column(column, overflow="fold", justify="right" if column == "step" else "left")
    for row in rows:
        step = "-" if row["step"] is None else str(row["step"])
        if row["total_steps"] is not None:
            step += f"/{row['total_steps']}"
        loss = "-" if row["loss"] is None else f"{row['loss']:.4g}"
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in row["eval"].items())
        evaluation = f"{metrics} (step {row['eval_step']})" if metrics else "-"
        table.add_row(row["run"], str(row["recipe"]), row["method"], step, loss, evaluation)
    Console().print(table)
