"""Dynamic Weight Average across timestep clusters (Liu et al. 2019, "End-to-End Multi-Task
Learning with Attention", CVPR, Eq. 1).

DWA weights each task by how slowly its loss has been falling: ``w_i = k exp(r_i / T) / sum_j
exp(r_j / T)`` with ``r_i = L_i(p - 1) / L_i(p - 2)`` the ratio of the task's average losses over
the last two periods. The paper's periods are epochs; the diffusion runs here are counted in
steps, so a period is ``period`` steps, whose observed (rank-averaged) cluster losses are summed on
the device. The weights are 1 during the first two periods.
"""

from __future__ import annotations

from typing import Any

import torch

from ant.methods.base import LossMethod

RATIO_FLOOR = 1e-12
"""Lower bound of the earlier period's loss in the ratio, so that a zero loss gives no inf."""


def dwa_weights(recent: torch.Tensor, earlier: torch.Tensor, temperature: float) -> torch.Tensor:
    """``k * softmax(r / T)`` with ``r = recent / earlier`` (Liu et al. 2019, Eq. 1).

    ``recent`` and ``earlier`` are the per-task average losses of the last and the one-before-last
    period; the weights sum to k, and equal ratios give all ones.
    """
    ratio = recent / torch.clamp(earlier, min=RATIO_FLOOR)
    return recent.shape[0] * torch.softmax(ratio / temperature, dim=0)


class DWA(LossMethod):
    """Dynamic Weight Average of the cluster losses over periods of ``period`` steps.

    The objective is ``sum_i w_i l_i / k``, the vanilla mean when all weights are 1.
    ``task_weights`` reports ``w_i / k``, the coefficient of each cluster loss (1 / k each while
    the weights are 1). The period sums and averages are buffers and the counters extra state, so
    checkpoints hold them; nothing is read back to the host.
    """

    observes_losses = True
    linear_in_losses = True
    weights: torch.Tensor
    loss_sum: torch.Tensor
    last: torch.Tensor
    before_last: torch.Tensor

    def __init__(self, num_tasks: int, temperature: float = 2.0, period: int = 100) -> None:
        super().__init__(num_tasks)
        if not temperature > 0.0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if period < 1:
            raise ValueError(f"period must be at least 1, got {period}")
        self.temperature = temperature
        self.period = period
        self.register_buffer("weights", torch.ones(num_tasks))
        for name in ("loss_sum", "last", "before_last"):
            self.register_buffer(name, torch.zeros(num_tasks))
        self.steps_in_period = 0
        self.periods_done = 0

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        return (self.weights * losses).sum() / self.num_tasks

    def observe(self, losses: torch.Tensor) -> None:
        """Add the losses to the current period; at its end, update the weights."""
        self.loss_sum.add_(losses.detach().to(self.loss_sum.dtype))
        self.steps_in_period += 1
        if self.steps_in_period < self.period:
            return
        self.before_last.copy_(self.last)
        self.last.copy_(self.loss_sum / self.period)
        self.loss_sum.zero_()
        self.steps_in_period = 0
        self.periods_done += 1
        if self.periods_done >= 2:
            self.weights.copy_(dwa_weights(self.last, self.before_last, self.temperature))

    def task_weights(self) -> torch.Tensor:
        return self.weights / self.num_tasks

    def get_extra_state(self) -> dict[str, Any]:
        return {"steps_in_period": self.steps_in_period, "periods_done": self.periods_done}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.steps_in_period = int(state["steps_in_period"])
        self.periods_done = int(state["periods_done"])
