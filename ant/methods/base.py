"""The interface of loss-based multi-task methods (the LibMTL weighting pattern)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import nn


class LossMethod(nn.Module):
    """Combine the k per-cluster losses of a batch into the scalar to back-propagate.

    Subclasses implement :meth:`combine` and :meth:`task_weights`. Learnable parameters of the
    method (as in Uncertainty Weighting) are ordinary module parameters, so they are saved with
    ``state_dict`` and trained by the optimizer groups that :meth:`param_groups` returns.
    ``timestep_sampling`` tells the trainer how to draw timesteps: ``stratified`` (chunk i of the
    local batch draws t inside cluster i) or ``uniform`` (plain uniform t).
    """

    timestep_sampling: ClassVar[Literal["stratified", "uniform"]] = "stratified"

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be at least 1, got {num_tasks}")
        self.num_tasks = num_tasks

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        """The training loss from per-cluster mean losses ``losses`` of shape ``[k]``."""
        raise NotImplementedError

    def task_weights(self) -> torch.Tensor:
        """The current weight of each cluster's loss (shape ``[k]``), for logging."""
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups for the method's own parameters (none by default)."""
        return []

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return self.combine(losses)
