"""Clustering of the T denoising tasks (timesteps) into k contiguous intervals.

The names below are imported from their modules on first access, so importing this package (as
plugin registration does) imports no numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ant.core.registry import lazy_exports

if TYPE_CHECKING:
    from ant.clustering.dp import IntervalCost, Partition, solve_partition
    from ant.clustering.intervals import Interval, equal_intervals, validate_intervals
    from ant.clustering.objectives import (
        Clustering,
        GradientObjective,
        IntervalObjective,
        Objective,
        SNRObjective,
        TimestepObjective,
        UniformObjective,
    )
    from ant.clustering.solve import CLUSTERS_FILE, cluster_tasks, write_clusters
    from ant.clustering.space import TaskSpace, expand_affinity, load_affinity

_EXPORTS = {
    "IntervalCost": "dp",
    "Partition": "dp",
    "solve_partition": "dp",
    "Interval": "intervals",
    "equal_intervals": "intervals",
    "validate_intervals": "intervals",
    "Clustering": "objectives",
    "GradientObjective": "objectives",
    "IntervalObjective": "objectives",
    "Objective": "objectives",
    "SNRObjective": "objectives",
    "TimestepObjective": "objectives",
    "UniformObjective": "objectives",
    "CLUSTERS_FILE": "solve",
    "cluster_tasks": "solve",
    "write_clusters": "solve",
    "TaskSpace": "space",
    "expand_affinity": "space",
    "load_affinity": "space",
}
__all__ = [
    "CLUSTERS_FILE",
    "Clustering",
    "GradientObjective",
    "Interval",
    "IntervalCost",
    "IntervalObjective",
    "Objective",
    "Partition",
    "SNRObjective",
    "TaskSpace",
    "TimestepObjective",
    "UniformObjective",
    "cluster_tasks",
    "equal_intervals",
    "expand_affinity",
    "load_affinity",
    "solve_partition",
    "validate_intervals",
    "write_clusters",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
