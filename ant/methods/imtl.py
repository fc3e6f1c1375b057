"""IMTL-G across timestep clusters (Liu et al. 2021, "Towards Impartial Multi-task Learning",
ICLR, Sec. 3.2).

IMTL-G picks the update ``g = sum_t alpha_t g_t`` with ``sum_t alpha_t = 1`` whose projections
onto every task's unit gradient ``u_t = g_t / ||g_t||`` are equal, ``g u_1^T = g u_t^T``. Sec. 3.2
gives it in closed form: with ``D = [g_1 - g_2, ..., g_1 - g_k]^T`` and ``U = [u_1 - u_2, ...,
u_1 - u_k]^T``,

    alpha_{2..k} = g_1 U^T (D U^T)^{-1},   alpha_1 = 1 - sum_{t >= 2} alpha_t.

Every product in it is an inner product of gradients, so it is computed on the k x k Gram matrix.

Scale convention: the trainer's rows are gradients of ``l_i / k``, i.e. the paper's ``g_t`` over
``k``, so the update is ``k sum_t alpha_t row_t``. Uniform weights ``alpha = 1 / k`` are then the
vanilla gradient ``grads.sum(0)``, and with k = 1 the update is the gradient itself.
"""

from __future__ import annotations

import torch

from ant.methods.base import GradientMethod

TINY = 1e-30
RIDGE = 1e-12


def imtl_weights(gram: torch.Tensor) -> torch.Tensor:
    """IMTL-G's ``alpha`` (sums to 1) from the Gram matrix of the gradients (Sec. 3.2, closed form).

    With ``N[i, j] = <g_i, u_j> = M[i, j] / ||g_j||``: ``(g_1 U^T)_t = N[1, 1] - N[1, t]`` and
    ``(D U^T)[s, t] = N[1, 1] - N[1, t] - N[s, 1] + N[s, t]`` for s, t = 2..k. ``alpha_{2..k}``
    solves ``(D U^T)^T x = (g_1 U^T)^T``; it is computed as the ridge least-squares solution
    ``(A A^T + lambda I) x = A r`` with ``A = D U^T`` and ``lambda = 1e-12`` times the mean diagonal
    of ``A A^T``, which equals the closed form to relative precision about ``1e-12 cond(A)^2`` when
    ``A`` is invertible and stays finite when it is singular (e.g. two parallel gradients, whose
    rows of ``U`` vanish). The system is solved with ``solve_ex``, which reads nothing back to
    the host. A zero gradient is given a unit direction of zero (its norm is clamped).
    """
    k = gram.shape[0]
    if k == 1:
        return torch.ones(1, dtype=gram.dtype, device=gram.device)
    norms = gram.diagonal().clamp_min(TINY).sqrt()
    proj = gram / norms[None, :]
    rhs = proj[0, 0] - proj[0, 1:]
    system = proj[0, 0] - proj[0, 1:][None, :] - proj[1:, 0][:, None] + proj[1:, 1:]
    normal = system @ system.T
    ridge = RIDGE * normal.diagonal().mean().clamp_min(TINY)
    eye = torch.eye(k - 1, dtype=gram.dtype, device=gram.device)
    tail, _ = torch.linalg.solve_ex(normal + ridge * eye, system @ rhs)
    return torch.cat([(1.0 - tail.sum()).reshape(1), tail])


def imtl_direction(grads: torch.Tensor) -> torch.Tensor:
    """IMTL-G's update ``k sum_t alpha_t row_t`` from the ``[k, P]`` rows ``grads`` (Sec. 3.2)."""
    alpha = imtl_weights((grads @ grads.T).double())
    return (grads.shape[0] * alpha).to(grads.dtype) @ grads


class IMTL(GradientMethod):
    """IMTL-G (Liu et al. 2021, Sec. 3.2): the update with equal projections on every cluster.

    ``task_weights`` reports ``alpha`` of the last update, the weight of each cluster loss ``l_i``
    (``1 / k`` each before the first update); ``alpha`` sums to 1 and may have negative entries.
    """

    last_weights: torch.Tensor

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self.register_buffer(
            "last_weights", torch.full((num_tasks,), 1.0 / num_tasks), persistent=False
        )

    def combine_gram(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        alpha = imtl_weights(gram)
        self.last_weights = alpha.float()
        return self.num_tasks * alpha

    def task_weights(self) -> torch.Tensor:
        return self.last_weights
