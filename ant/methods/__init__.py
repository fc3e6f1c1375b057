"""Multi-task methods across timestep clusters and loss-weighting baselines."""

from ant.methods.base import LossMethod

__all__ = ["LossMethod"]
