"""The method interface: how a multi-task method turns k per-cluster losses into an update.

ANT (Go et al. 2023, Sec. 4.2) treats the k timestep clusters as tasks and applies a multi-task
method across them. Methods come in three kinds, all built by ``method`` plugins:

* :class:`LossMethod` (Uncertainty Weighting, DWA, RLW, FAMO): ``combine`` maps the per-cluster
  losses ``l`` (shape ``[k]``) to the scalar that is back-propagated once (the LibMTL weighting
  pattern).
* :class:`GradientMethod` (PCGrad, CAGrad, IMTL-G, Nash-MTL): the update is a combination
  ``sum_j c_j g_j`` of the k per-cluster gradients (row ``g_i`` the gradient of ``l_i / k`` over
  all P model parameters, so ``c = 1`` is the vanilla gradient). ``combine_gram`` maps the k x k
  Gram matrix ``G G^T`` and the losses to the coefficients ``c``; the trainer accumulates the
  Gram matrix during the backward pass and writes ``sum_j c_j g_j`` into each parameter's
  ``.grad``, so the ``[k, P]`` matrix is read once. A method that truly needs the gradients
  overrides ``combine_grads`` (``G`` of shape ``[k, P]`` to the direction ``[P]``) instead.
  ``wants_grads(step)`` says on which steps it needs them; on the others the trainer calls
  ``combine`` like for a loss method (Nash-MTL reuses its weights between solves).
* :class:`TimestepWeighting` (Min-SNR, P2, debiased, EDM2 uncertainty): reweights each sample's
  denoising loss by its noise level before the losses are grouped into clusters. It composes
  with a cluster method (``weighting:`` in a recipe, e.g. Min-SNR inside clusters and UW across),
  or serves alone as ``method.name`` (then clusters are averaged plainly).

Checkpoints hold ``state_dict()``: learnable parameters, buffers and ``get_extra_state`` (host
state such as step counters and solver statistics). Under DDP every rank must apply the same
update: the trainer averages the methods' own gradients and, for gradient methods, the
per-cluster gradients over ranks; methods that set ``observes_losses`` receive per-cluster losses
averaged over ranks in ``observe``; methods that draw random numbers use a generator seeded the
same on every rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from ant.diffusion import GaussianDiffusion


class Method(nn.Module):
    """What every cluster method has: the task count, logged weights and its own parameters.

    ``timestep_sampling`` tells the trainer how to draw timesteps: ``stratified`` (chunk i of the
    local batch draws t inside cluster i) or ``uniform`` (plain uniform t). ``max_grad_norm``, if
    set, clips the model's gradient norm on top of ``optim.grad_clip`` (the smaller applies).
    """

    timestep_sampling: ClassVar[Literal["stratified", "uniform"]] = "stratified"
    observes_losses: ClassVar[bool] = False
    linear_in_losses: ClassVar[bool] = False
    """Whether ``combine`` is affine in the losses (``w . l + b`` with ``w`` and ``b`` free of
    ``l``). Gradient accumulation then back-propagates ``w . l`` per micro-batch; otherwise it
    collects per-cluster gradients and applies ``combine``'s gradient at the whole batch's
    losses. Either way the step equals one step on the whole batch."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be at least 1, got {num_tasks}")
        self.num_tasks = num_tasks
        self.max_grad_norm: float | None = None

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        """The scalar to back-propagate from the per-cluster losses ``losses`` (shape ``[k]``)."""
        raise NotImplementedError

    def task_weights(self) -> torch.Tensor:
        """The current weight of each cluster (shape ``[k]``), for logging."""
        return torch.full((self.num_tasks,), 1.0 / self.num_tasks)

    reevaluates_batch: bool = False
    """Whether the trainer re-evaluates the step's batch after the update (one no-grad forward of
    the updated model on the same noised inputs, timesteps, labels and label dropout) and calls
    :meth:`observe_update` instead of :meth:`observe`."""

    def observe(self, losses: torch.Tensor) -> None:
        """Called after each update with the step's per-cluster losses (detached, rank-averaged).

        Only called for methods that set ``observes_losses``; the default does nothing.
        """

    def observe_update(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """Called after each update, for methods that set ``observes_losses`` and
        ``reevaluates_batch``, with the per-cluster losses of the same batch before and after it
        (detached, rank-averaged)."""
        raise NotImplementedError

    def metrics(self) -> dict[str, torch.Tensor]:
        """Extra scalars to log (e.g. solver failures), as tensors; read only when logging."""
        return {}

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups for the method's own parameters (none by default)."""
        return []

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return self.combine(losses)


class LossMethod(Method):
    """A method that only needs the k per-cluster losses: one backward pass per step."""


class GradientMethod(Method):
    """A method that combines the k per-cluster gradients into the update direction.

    ``combine_gram`` receives the Gram matrix ``M = G G^T`` (``[k, k]``, float64, of the rows
    ``g_i``, the gradients of ``l_i / k`` averaged over ranks) and the per-cluster losses, and
    returns the coefficients ``c`` (``[k]``) of the update ``sum_j c_j g_j``. A method that needs
    more than inner products overrides ``combine_grads`` instead, which receives ``G`` itself.
    Both must be deterministic given the method's state, so that every rank computes the same
    update.
    """

    linear_in_losses = True

    def wants_grads(self, step: int) -> bool:
        """Whether step ``step`` (1-based) needs the per-cluster gradients (default: always)."""
        return True

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        """The loss on steps without per-cluster gradients: the plain mean by default."""
        return losses.mean()

    def combine_gram(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """The coefficients ``c`` (``[k]``) of the update ``sum_j c_j g_j`` from ``G G^T``."""
        raise NotImplementedError

    def combine_grads(self, grads: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """The update direction ``[P]`` from per-cluster gradients ``grads`` ``[k, P]``.

        By default ``combine_gram`` on ``grads grads^T``; override it (and leave
        ``combine_gram``) for a method that needs the gradients themselves.
        """
        coefficients = self.combine_gram((grads @ grads.T).double(), losses)
        return coefficients.to(grads.dtype) @ grads

    @classmethod
    def uses_gram(cls) -> bool:
        """Whether the method works from the Gram matrix (it does not override
        ``combine_grads``)."""
        return cls.combine_grads is GradientMethod.combine_grads


class TimestepWeighting(nn.Module):
    """A per-sample reweighting of the denoising loss by noise level.

    ``bind`` is called once with the diffusion process so that weights can be tabulated per
    timestep; ``weigh(mse, t)`` returns the reweighted per-sample loss (shape ``[B]``). It is
    applied to the denoising (mean) term only; the variance term of the hybrid loss of a
    learned-sigma model is added unweighted.
    """

    def bind(self, diffusion: GaussianDiffusion) -> None:
        """Prepare for ``diffusion`` (its schedule and prediction type)."""

    def weigh(self, mse: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The reweighted per-sample denoising loss."""
        raise NotImplementedError

    def metrics(self) -> dict[str, torch.Tensor]:
        """Extra scalars to log, as tensors."""
        return {}

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups for the weighting's own parameters (none by default)."""
        return []

    def forward(self, mse: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.weigh(mse, t)
