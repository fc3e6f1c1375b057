"""Clustering of the T denoising tasks (timesteps) into k contiguous intervals."""

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
