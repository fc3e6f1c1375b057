"""Plots of interval boundaries over the schedule's log-SNR curve (Go et al. 2023, Sec. 4.1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ant.clustering.objectives import Clustering
from ant.core.atomic import atomic_write


@dataclass(frozen=True)
class Panel:
    """One panel: a title, the per-timestep log-SNR and the clusters drawn over it."""

    title: str
    log_snr: np.ndarray
    clustering: Clustering


def plot_boundaries(path: Path, panels: Sequence[Panel], *, dpi: int = 120) -> Path:
    """Draw each panel's log-SNR curve with its interval boundaries, side by side, to a PNG.

    Intervals are shaded alternately and labelled with their inclusive ``start-end`` range;
    boundaries are drawn between the last timestep of one interval and the first of the next.
    Renders with the Agg backend (no display needed) and writes ``path`` atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("nothing to plot: no panels")
    figure = Figure(figsize=(5.5 * len(panels), 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
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
        ax.set_xlabel("timestep t (0-indexed)")
        ax.set_ylabel("log SNR")
        ax.set_title(panel.title, fontsize=10)
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    return path
