"""Clustering of the T denoising tasks (timesteps) into k contiguous intervals."""

from ant.clustering.intervals import Interval, equal_intervals, validate_intervals

__all__ = ["Interval", "equal_intervals", "validate_intervals"]
