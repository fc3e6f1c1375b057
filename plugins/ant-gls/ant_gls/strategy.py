"""The Geometric Loss Strategy (Chennupati et al. 2019) as an ant loss method."""

from __future__ import annotations

import torch

from ant.methods import LossMethod


def geometric_mean_loss(losses: torch.Tensor, floor: float = 1e-12) -> torch.Tensor:
    """``(prod_i l_i) ** (1 / k)``, computed as ``exp(mean(log l_i))``.

    Chennupati et al., "MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss Strategy
    for Multi-Task Learning" (CVPR Workshops 2019), Eq. 2. Its gradient with respect to ``l_i`` is
    ``GLS / (k * l_i)``: tasks with small losses get larger weights, without learned parameters.
    ``floor`` keeps the logarithm finite when a loss reaches zero.
    """
    return torch.exp(torch.log(losses.clamp_min(floor)).mean())


class GeometricLossStrategy(LossMethod):
    """Geometric mean of cluster losses (Chennupati et al. 2019), no learned weights."""

    def __init__(self, num_tasks: int, floor: float = 1e-12) -> None:
        super().__init__(num_tasks)
        self.floor = floor
        self.register_buffer(
            "_weights", torch.full((num_tasks,), 1.0 / num_tasks), persistent=False
        )

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        total = geometric_mean_loss(losses, self.floor)
        with torch.no_grad():
            self._weights.copy_(total / (self.num_tasks * losses.clamp_min(self.floor)))
        return total

    def task_weights(self) -> torch.Tensor:
        return self._weights.clone()
