"""FAMO across timestep clusters (Liu et al. 2023, "FAMO: Fast Adaptive Multitask Optimization",
NeurIPS, Alg. 1).

FAMO keeps task logits ``xi`` (z = softmax(xi)) and descends ``sum_i z_i log l_i``, whose gradient
``sum_i z_i grad l_i / l_i`` scaled by ``c = 1 / sum_i (z_i / l_i)`` is a convex combination of the
task gradients (weights ``c z_i / l_i``, summing to 1, so the update has the scale of the vanilla
mean). After each update it moves ``xi`` so that the tasks whose log loss fell least get more
weight: with ``delta_i = log l_i(before) - log l_i(after)``, the gradient of ``xi`` is
``J_softmax(xi)^T delta``, applied by Adam with weight decay.

The "after" losses come, as in the reference version, from the same batch re-evaluated after
the update (``delta="same_batch"``, the default): the trainer runs one extra no-grad forward of
the updated model on the step's noised inputs, timesteps, labels and label dropout (about a
third of a step more) and calls :meth:`FAMO.observe_update`. ``delta="cross_batch"`` takes the
losses of two consecutive steps instead, which come from different batches: no extra forward, but
the change of batch adds noise that, on diffusion losses, drowns the effect of one update (the
weights then barely move; docs/methods.md), and ``xi`` is updated one step later. As in the
reference version, the model's gradient norm is clipped at ``max_norm`` (1.0).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ant.methods.base import LossMethod

LOSS_FLOOR = 1e-8
"""Added to every loss before its logarithm (the reference version's lower bound b_i = 0)."""

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

DELTAS = ("same_batch", "cross_batch")
"""Where FAMO's loss change comes from: the same batch after the update, or the next batch."""


def famo_objective(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``c * sum_i z_i log(l_i + floor)`` with ``c = 1 / sum_i z_i / (l_i + floor)`` detached.

    The FAMO update direction (Liu et al. 2023, Alg. 1, the step on theta): its gradient with
    respect to ``l_i`` is ``c z_i / (l_i + floor)``, and these weights sum to 1.
    """
    shifted = losses + LOSS_FLOOR
    scale = torch.reciprocal((weights / shifted).sum()).detach()
    return scale * (weights * torch.log(shifted)).sum()


def famo_logit_gradient(
    logits: torch.Tensor, before: torch.Tensor, after: torch.Tensor
) -> torch.Tensor:
    """``J_softmax(xi)^T delta`` with ``delta_i = log l_i(before) - log l_i(after)`` (Alg. 1).

    The softmax Jacobian ``diag(z) - z z^T`` is symmetric, so the product is
    ``z * (delta - <z, delta>)``. Descending it lowers the logits of the tasks whose log loss fell
    most.
    """
    z = torch.softmax(logits, dim=0)
    delta = torch.log(before + LOSS_FLOOR) - torch.log(after + LOSS_FLOOR)
    return z * (delta - (z * delta).sum())


def adam_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    weight_decay: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam step (Kingma & Ba 2015, Alg. 1) with L2 weight decay added to the gradient.

    ``step`` counts from 1. Returns the new parameter and moment estimates; the same update as
    ``torch.optim.Adam(lr=lr, weight_decay=weight_decay)`` with betas (0.9, 0.999), eps 1e-8,
    which the FAMO reference version uses for the logits.
    """
    beta1, beta2 = ADAM_BETAS
    grad = grad + weight_decay * param
    exp_avg = beta1 * exp_avg + (1.0 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1.0 - beta2) * grad * grad
    bias1 = 1.0 - beta1**step
    bias2 = 1.0 - beta2**step
    denom = torch.sqrt(exp_avg_sq) / math.sqrt(bias2) + ADAM_EPS
    return param - (lr / bias1) * exp_avg / denom, exp_avg, exp_avg_sq


class FAMO(LossMethod):
    """Fast Adaptive Multitask Optimization of the cluster losses (Liu et al. 2023).

    The logits, their Adam moments and the previous step's losses (``cross_batch``) are buffers
    and the step counters extra state, so checkpoints hold them; none of them is a parameter of
    the model's optimizer. ``observe``, ``observe_update`` and ``combine`` run on the device
    without reading values back. ``task_weights`` are the softmax weights ``z``.
    """

    observes_losses = True
    logits: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    previous: torch.Tensor

    def __init__(
        self,
        num_tasks: int,
        lr: float = 0.025,
        weight_decay: float = 1e-3,
        delta: str = "same_batch",
        max_norm: float | None = 1.0,
    ) -> None:
        super().__init__(num_tasks)
        if not lr > 0.0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be non-negative, got {weight_decay}")
        if delta not in DELTAS:
            raise ValueError(f"FAMO's delta must be one of {', '.join(DELTAS)}, got '{delta}'")
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"FAMO's max_norm must be positive or null, got {max_norm}")
        self.lr = lr
        self.weight_decay = weight_decay
        self.delta = delta
        self.reevaluates_batch = delta == "same_batch"
        self.max_grad_norm = max_norm
        for name in ("logits", "exp_avg", "exp_avg_sq", "previous"):
            self.register_buffer(name, torch.zeros(num_tasks))
        self.steps = 0
        self.has_previous = False

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        return famo_objective(losses, torch.softmax(self.logits, dim=0))

    def observe(self, losses: torch.Tensor) -> None:
        """``cross_batch``: update the logits from the previous step's and these losses, then
        remember these."""
        losses = losses.detach().to(self.previous.dtype)
        if self.has_previous:
            self._step_logits(self.previous, losses)
        self.previous.copy_(losses)
        self.has_previous = True

    def observe_update(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """``same_batch``: update the logits from the batch's losses before and after the
        update (Alg. 1, the step on xi)."""
        dtype = self.logits.dtype
        self._step_logits(before.detach().to(dtype), after.detach().to(dtype))

    def _step_logits(self, before: torch.Tensor, after: torch.Tensor) -> None:
        self.steps += 1
        grad = famo_logit_gradient(self.logits, before, after)
        logits, exp_avg, exp_avg_sq = adam_step(
            self.logits,
            grad,
            self.exp_avg,
            self.exp_avg_sq,
            self.steps,
            self.lr,
            self.weight_decay,
        )
        self.logits.copy_(logits)
        self.exp_avg.copy_(exp_avg)
        self.exp_avg_sq.copy_(exp_avg_sq)

    def task_weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def get_extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps, "has_previous": int(self.has_previous)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.has_previous = bool(state["has_previous"])
