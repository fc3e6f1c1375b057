"""Uncertainty Weighting across timestep clusters (Kendall et al. 2018; ANT, Go et al. 2023)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ant.methods.base import LossMethod


def uncertainty_weighted_loss(losses: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """``sum_i 0.5 * (exp(-s_i) * l_i / k + s_i)`` (Kendall et al. 2018, Eq. 10, as ANT applies it).

    ``losses`` are the k per-cluster mean losses, ``log_var`` the learned ``s``. The minimum over
    ``s`` is at ``exp(s_i) = l_i / k``, so each cluster's effective weight is proportional to
    ``1 / l_i``.
    """
    k = losses.shape[0]
    return 0.5 * (torch.exp(-log_var) * losses / k + log_var).sum()


class UncertaintyWeighting(LossMethod):
    """Uncertainty Weighting of cluster losses with learned log-variances (ANT-UW)."""

    linear_in_losses = True

    def __init__(self, num_tasks: int, lr: float = 0.025, weight_decay: float = 0.0) -> None:
        super().__init__(num_tasks)
        self.lr = lr
        self.weight_decay = weight_decay
        self.log_var = nn.Parameter(torch.zeros(num_tasks))

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        return uncertainty_weighted_loss(losses, self.log_var)

    def task_weights(self) -> torch.Tensor:
        return 0.5 * torch.exp(-self.log_var.detach())

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.log_var], "lr": self.lr, "weight_decay": self.weight_decay}]
