"""Multi-task methods across timestep clusters and per-timestep loss weightings."""

from ant.methods.base import GradientMethod, LossMethod, Method, TimestepWeighting

__all__ = ["GradientMethod", "LossMethod", "Method", "TimestepWeighting"]
