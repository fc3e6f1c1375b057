"""Vanilla diffusion training: uniform timesteps and the plain mean loss."""

from __future__ import annotations

import torch

from ant.methods.base import LossMethod


class Vanilla(LossMethod):
    """Plain mean loss over uniformly drawn timesteps (Ho et al. 2020), the baseline."""

    linear_in_losses = True

    timestep_sampling = "uniform"

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        return losses.mean()

    def task_weights(self) -> torch.Tensor:
        return torch.full((self.num_tasks,), 1.0 / self.num_tasks)
