"""Plots of interval boundaries over the schedule's log-SNR curve (Go et al. 2023, Sec. 4.1),
and of the timestep density each ``clustering.sampling`` gives them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ant.clustering.objectives import Clustering
from ant.clustering.sampling import SAMPLINGS, sampling_density
from ant.core.atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@dataclass(frozen=True)
class Panel:
    """One panel: a title, the per-timestep log-SNR and the clusters drawn over it."""

    title: str
    log_snr: np.ndarray
    clustering: Clustering


DENSITY_BATCH = 256
"""The batch whose proportional chunk sizes the density row shows."""


def plot_boundaries(path: Path, panels: Sequence[Panel], *, dpi: int = 120) -> Path:
    """Draw each panel's log-SNR curve with its interval boundaries, side by side, to a PNG,
    and under it the timestep density of each sampling mode (over uniform).

    Intervals are shaded alternately and labelled with their inclusive ``start-end`` range;
    boundaries are drawn between the last timestep of one interval and the first of the next.
    Renders with the Agg backend (no display needed) and writes ``path`` atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("nothing to plot: no panels")
    figure = Figure(figsize=(5.5 * len(panels), 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(2, len(panels), squeeze=False, height_ratios=[3, 2], sharex="col")
    for ax, below, panel in zip(grid[0], grid[1], panels, strict=True):
        _density_row(below, panel)
        t = np.arange(panel.log_snr.shape[0])
        ax.plot(t, panel.log_snr, color="black", linewidth=1.5)
        low, high = float(panel.log_snr.min()), float(panel.log_snr.max())
        for index, (start, end) in enumerate(panel.clustering.intervals):
            if index % 2 == 0:
                ax.axvspan(start - 0.5, end + 0.5, color="tab:blue", alpha=0.12, linewidth=0)
            if index > 0:
                ax.axvline(start - 0.5, color="tab:red", linewidth=1.0, linestyle="--")
            ax.text(
                (start + end) / 2,
                high - (index % 2) * 0.07 * (high - low),
                f"{start}-{end}",
                ha="center",
                va="top",
                fontsize=8,
            )
        ax.set_xlim(-0.5, t[-1] + 0.5)
        ax.set_ylabel("log SNR")
        ax.set_title(panel.title, fontsize=10)
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    return path


def _density_row(ax: Axes, panel: Panel) -> None:
    """The probability of each timestep over uniform, per ``clustering.sampling`` mode."""
    intervals = list(panel.clustering.intervals)
    t = np.arange(panel.log_snr.shape[0])
    styles = {"stratified": "tab:red", "proportional": "tab:green", "uniform": "0.5"}
    for mode in SAMPLINGS:
        density = sampling_density(intervals, mode, DENSITY_BATCH)
        label = f"{mode} (B = {DENSITY_BATCH})" if mode == "proportional" else mode
        ax.step(t, density, where="mid", color=styles[mode], label=label)
    ax.set_xlabel("timestep t (0-indexed)")
    ax.set_ylabel("density / uniform")
    ax.legend(fontsize=8, loc="upper center")
