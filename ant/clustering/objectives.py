"""Clustering objectives: how the T timesteps are grouped into k intervals."""

from __future__ import annotations

from ant.clustering.intervals import Interval, equal_intervals


class UniformObjective:
    """Equal-width timestep intervals, no optimisation."""

    def cluster(self, num_timesteps: int, k: int) -> list[Interval]:
        """The k equal-width intervals of ``0..num_timesteps-1``."""
        return equal_intervals(num_timesteps, k)
