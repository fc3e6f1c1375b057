"""Figures: metric-vs-step curves of runs (``ant plot``) and the NTG bar plot.

Figures are drawn with matplotlib's object API on the Agg canvas (no display, no global
pyplot state) and written atomically as PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from ant.core.atomic import atomic_write
from ant.core.errors import AntError
from ant.core.logbook import METRICS_FILE, read_metrics

EVAL_PREFIX = "eval/"
PANEL_SIZE = (5.0, 3.5)


@dataclass(frozen=True)
class Series:
    """One run's values of a metric: ``values[i]`` is a number, or one number per cluster."""

    run: Path
    key: str
    steps: list[int]
    values: list[Any]

    @property
    def per_cluster(self) -> bool:
        """Whether every value is a list (one entry per cluster)."""
        return bool(self.values) and all(isinstance(v, list) for v in self.values)


def _lookup(record: dict[str, Any], metric: str) -> tuple[str, Any] | None:
    for key in (metric, f"{EVAL_PREFIX}{metric}"):
        if key in record:
            return key, record[key]
    base, sep, index = metric.rpartition("/")
    if sep and index.isdigit():
        found = _lookup(record, base)
        if found is not None and isinstance(found[1], list) and int(index) < len(found[1]):
            return f"{found[0]}/{index}", found[1][int(index)]
    return None


def read_series(run: Path, metric: str) -> Series:
    """The values of ``metric`` in ``RUN/metrics.jsonl`` (``NAME`` also finds ``eval/NAME``;
    ``NAME/i`` is entry i of a per-cluster list)."""
    records = read_metrics(run)
    if not records:
        raise AntError(f"{run} has no {METRICS_FILE} (or it is empty): is it a run directory?")
    steps, values, key = [], [], metric
    for record in records:
        found = _lookup(record, metric)
        if found is None or "step" not in record:
            continue
        key, value = found
        if isinstance(value, (int, float)) and not math.isfinite(value):
            continue
        steps.append(int(record["step"]))
        values.append(value)
    if not steps:
        keys = sorted({k for record in records for k in record} - {"step"})
        raise AntError(f"{run} logged no '{metric}': it has {', '.join(keys)}")
    return Series(run, key, steps, values)


def _labels(runs: Sequence[Path]) -> list[str]:
    names = [run.name or str(run) for run in runs]
    return names if len(set(names)) == len(names) else [str(run) for run in runs]


def _save(figure: Figure, out: Path) -> Path:
    suffix = out.suffix.lstrip(".").lower() or "png"
    with atomic_write(out) as handle:
        figure.savefig(handle, format=suffix, dpi=120, bbox_inches="tight")
    return out


def plot_curves(runs: Sequence[Path], metric: str, out: Path, *, log_y: bool = False) -> Path:
    """Draw ``metric`` against the step for every run and save the figure to ``out``.

    A scalar metric gets one line per run on one panel; a per-cluster metric (a list per step,
    like ``cluster_loss``) gets one panel per run with one line per cluster.
    """
    series = [read_series(run, metric) for run in runs]
    labels = _labels(runs)
    per_cluster = [s.per_cluster for s in series]
    if any(per_cluster) and not all(per_cluster):
        raise AntError(f"'{metric}' is per-cluster in some runs and a number in others")
    if all(per_cluster):
        figure = Figure(figsize=(PANEL_SIZE[0] * len(series), PANEL_SIZE[1]))
        axes = figure.subplots(1, len(series), sharey=True, squeeze=False)[0]
        for ax, each, label in zip(axes, series, labels, strict=True):
            width = max(len(v) for v in each.values)
            for cluster in range(width):
                points = [
                    (step, v[cluster])
                    for step, v in zip(each.steps, each.values, strict=True)
                    if cluster < len(v)
                ]
                ax.plot([p[0] for p in points], [p[1] for p in points], label=f"cluster {cluster}")
            ax.set_title(label)
            ax.set_xlabel("step")
            ax.legend(fontsize="small")
        axes[0].set_ylabel(metric)
    else:
        figure = Figure(figsize=PANEL_SIZE)
        ax = figure.subplots()
        for each, label in zip(series, labels, strict=True):
            ax.plot(
                each.steps, each.values, marker="o" if len(each.steps) < 30 else None, label=label
            )
        ax.set_xlabel("step")
        ax.set_ylabel(series[0].key)
        ax.legend(fontsize="small")
        axes = [ax]
    for ax in axes:
        ax.grid(alpha=0.3)
        if log_y:
            ax.set_yscale("log")
    return _save(figure, out)


CONFLICT_PANELS = 5


def plot_conflict(run: Path, out: Path, *, panels: int = CONFLICT_PANELS) -> Path:
    """The per-cluster gradient cosines of ``run`` over training (``conflict`` records).

    Top row: the k x k cosine matrix at up to ``panels`` logged steps, evenly spread from the
    first to the last, and its mean over all logged steps (one batch's cosines are noisy; the
    mean shows the structure). Bottom: the cosine of every pair of clusters against the step,
    coloured by how far apart the clusters are, with the first and last (lowest and highest
    noise) in bold; ANT's observation O1 is that distant clusters conflict most.
    """
    series = read_series(run, "conflict")
    count = len(series.steps)
    spread = max(panels - 1, 1)
    chosen = sorted({round(i * (count - 1) / spread) for i in range(min(panels, count))})
    k = len(series.values[0])
    mean = [[sum(m[i][j] for m in series.values) / count for j in range(k)] for i in range(k)]
    shown = [(f"step {series.steps[i]}", series.values[i]) for i in chosen]
    shown.append((f"mean of {count} steps", mean))
    figure = Figure(figsize=(2.6 * len(shown) + 1.0, 6.4))
    grid = figure.add_gridspec(2, len(shown) + 1, width_ratios=[1.0] * len(shown) + [0.06])
    image = None
    for column, (title, matrix) in enumerate(shown):
        ax = figure.add_subplot(grid[0, column])
        image = ax.imshow(matrix, cmap="RdBu", vmin=-1.0, vmax=1.0)
        ax.set_title(title, fontsize="small")
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xlabel("cluster")
        if column == 0:
            ax.set_ylabel("cluster (0: least noise)")
    if image is not None:
        figure.colorbar(image, cax=figure.add_subplot(grid[0, -1]), label="cosine")
    lines = figure.add_subplot(grid[1, :-1])
    palette = colormaps["viridis"]
    for i in range(k):
        for j in range(i + 1, k):
            values = [matrix[i][j] for matrix in series.values]
            far = (j - i) / max(k - 1, 1)
            bold = i == 0 and j == k - 1
            lines.plot(
                series.steps,
                values,
                color=palette(far),
                linewidth=2.5 if bold else 1.0,
                label=f"{i}-{j}" if bold or j == i + 1 else None,
            )
    lines.axhline(0.0, color="black", linewidth=0.8)
    lines.set_xlabel("step")
    lines.set_ylabel("cosine of cluster gradients")
    lines.set_title(f"{run.name or run}: pairs coloured by distance, first-last in bold")
    lines.legend(fontsize="x-small", ncol=k)
    lines.grid(alpha=0.3)
    return _save(figure, out)


def plot_ntg(labels: Sequence[str], gaps: Sequence[float], metric: str, out: Path) -> Path:
    """Bars of NTG per interval: red below zero (negative transfer), blue above."""
    figure = Figure(figsize=(max(4.0, 1.1 * len(labels) + 1.5), 3.5))
    ax = figure.subplots()
    colours = ["tab:red" if gap < 0 else "tab:blue" for gap in gaps]
    ax.bar(list(labels), list(gaps), color=colours)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("interval (timesteps, inclusive)")
    ax.set_ylabel(f"NTG ({metric.upper()})")
    ax.set_title(f"{metric.upper()}(composed) - {metric.upper()}(shared); < 0: negative transfer")
    ax.grid(axis="y", alpha=0.3)
    return _save(figure, out)
