"""Random Loss Weighting across timestep clusters (Lin et al. 2022, "Reasonable Effectiveness of
Random Weighting: A Litmus Test for Multi-Task Learning", TMLR).

Every step draws ``lambda = softmax(lambda~)`` with ``lambda~ ~ N(0, I_k)`` (the paper's default
distribution) and optimises ``sum_i lambda_i l_i``. The draws come from a CPU generator seeded by
``seed``, so every rank draws the same weights without communication; its state is checkpointed.
"""

from __future__ import annotations

from typing import Any

import torch

from ant.methods.base import LossMethod


def random_weights(num_tasks: int, generator: torch.Generator) -> torch.Tensor:
    """``softmax(N(0, I_k))`` drawn from ``generator`` on the CPU (Lin et al. 2022)."""
    return torch.softmax(torch.randn(num_tasks, generator=generator), dim=0)


class RLW(LossMethod):
    """Random Loss Weighting: fresh softmax-normal weights of the cluster losses at every step.

    The k weights are drawn on the CPU and copied to a CUDA device from pinned memory, so the copy
    does not wait for the GPU. ``task_weights`` reports the weights of the last step (1 / k each
    before the first).
    """

    linear_in_losses = True

    def __init__(self, num_tasks: int, seed: int = 0) -> None:
        super().__init__(num_tasks)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._last: torch.Tensor | None = None

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        weights = random_weights(self.num_tasks, self.generator)
        if losses.device.type == "cuda":
            weights = weights.pin_memory()
        weights = weights.to(device=losses.device, dtype=losses.dtype, non_blocking=True)
        self._last = weights
        return (weights * losses).sum()

    def task_weights(self) -> torch.Tensor:
        if self._last is None:
            return super().task_weights()
        return self._last

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())
