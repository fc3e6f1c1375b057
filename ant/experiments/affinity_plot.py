"""Heatmaps of a task-affinity matrix over timesteps or log-SNR (Go et al. 2023, Fig. 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ant.core.atomic import atomic_write


def plot_affinity(
    path: Path,
    affinity: np.ndarray,
    edges: np.ndarray,
    *,
    axis_label: str,
    title: str,
    dpi: int = 120,
) -> Path:
    """Draw the ``G x G`` matrix as a heatmap whose cells span ``edges`` (``G + 1`` values).

    ``edges`` may be non-uniform and decreasing (log-SNR falls with t); the first group sits at
    the top left either way. Colours run from -1 (blue) to +1 (red). Renders with the Agg
    backend and writes ``path`` atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = affinity.shape[0]
    if affinity.shape != (groups, groups) or edges.shape != (groups + 1,):
        raise ValueError(
            f"need a square matrix and one more edge than groups, got {affinity.shape} "
            f"and {edges.shape}"
        )
    figure = Figure(figsize=(5.8, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    mesh = ax.pcolormesh(edges, edges, affinity, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(edges[-1], edges[0])
    ax.set_aspect("equal")
    ax.set_xlabel(axis_label)
    ax.set_ylabel(axis_label)
    ax.set_title(title, fontsize=9)
    figure.colorbar(mesh, ax=ax, label="cosine similarity of training gradients")
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    return path
