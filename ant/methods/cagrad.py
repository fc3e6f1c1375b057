"""CAGrad across timestep clusters (Liu et al. 2021, "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS, Alg. 1).

CAGrad looks for the update ``d`` in the ball ``||d - g0|| <= c ||g0||`` around the average
gradient ``g0`` that maximises the worst task improvement ``min_i <g_i, d>``. Its dual (Sec. 3,
Alg. 1) is a problem over the simplex,

    w* = argmin_{w in simplex} g_w^T g0 + sqrt(phi) ||g_w||,   phi = c^2 ||g0||^2,

with ``g_w = sum_i w_i g_i``, and the update is ``d = g0 + sqrt(phi) / ||g_w|| g_w``, rescaled here
by ``1 / (1 + c^2)`` (the official code's default ``rescale=1``).

Scale convention: the trainer's rows are gradients of ``l_i / k``, so the paper's per-task
gradients are ``k`` times the rows and ``g0`` (their average) is the sum of the rows, the vanilla
gradient. ``w*`` does not change when every ``g_i`` is scaled alike, and ``sqrt(phi) g_w / ||g_w||``
only depends on the direction of ``g_w``, so the rows can be used as they are: with ``c = 0`` the
update is exactly ``grads.sum(0)``.

The k-dimensional problem is solved exactly on the Gram matrix, on the device and without host
synchronisation, by enumerating the candidate supports of ``w`` (see :func:`cagrad_weights`).
"""

from __future__ import annotations

import torch

from ant.methods.base import GradientMethod

TINY = 1e-30
MAX_TASKS = 12


def supports(num_tasks: int, device: torch.device | None = None) -> torch.Tensor:
    """All ``2^k - 1`` non-empty subsets of the k tasks as a boolean mask ``[2^k - 1, k]``."""
    codes = torch.arange(1, 2**num_tasks, device=device)
    bits = torch.arange(num_tasks, device=device)
    return (codes[:, None] >> bits) & 1 == 1


def cagrad_objective(gram: torch.Tensor, weights: torch.Tensor, c: float) -> torch.Tensor:
    """``F(w) = g_w^T g0 + c ||g0|| ||g_w||`` (Liu et al. 2021, Alg. 1) for the rows of ``weights``.

    ``gram`` is the Gram matrix ``M`` of the rows, so ``g_w^T g0 = w^T M 1``, ``||g0||^2 =
    1^T M 1`` and ``||g_w||^2 = w^T M w``. ``weights`` has shape ``[..., k]``.
    """
    rho = c * gram.sum().clamp_min(0.0).sqrt()
    linear = weights @ gram.sum(dim=1)
    quadratic = ((weights @ gram) * weights).sum(dim=-1).clamp_min(0.0)
    return linear + rho * quadratic.sqrt()


def cagrad_weights(gram: torch.Tensor, c: float) -> torch.Tensor:
    """The minimiser ``w*`` of :func:`cagrad_objective` over the simplex (Liu et al. 2021, Alg. 1).

    Exact, by the optimality conditions: on the support S of ``w*`` every active gradient has the
    same inner product with the update, ``<g_i, d> = b_i + rho (M w)_i / n = lambda`` for i in S,
    with ``b = M 1``, ``rho = c ||g0||`` and ``n = ||g_w||``. Hence ``w_S = (n / rho) M_S^{-1}
    (lambda 1 - b_S)``; with ``a = M_S^{-1} 1``, ``e = M_S^{-1} b_S`` and ``A = 1^T a``, ``B =
    1^T e``, ``C = b_S^T e``, the identity ``n^2 = w^T M w`` gives ``A lambda^2 - 2 B lambda + C
    = rho^2`` and ``1^T w = 1`` picks the root ``lambda = (B + r) / A``, ``r = sqrt(B^2 - A (C -
    rho^2))``, so ``w_S = (lambda a - e) / r``. This candidate is computed for all ``2^k - 1``
    supports in one batched solve; each candidate is clipped to the simplex (a non-finite one is
    replaced by uniform weights), so every candidate is feasible, and the one with the smallest
    objective is returned. When the Gram matrix is non-singular the objective is strictly convex
    on the simplex and the candidate of the true support is the unique minimiser.
    """
    k = gram.shape[0]
    mask = supports(k, gram.device).to(gram.dtype)
    b = gram.sum(dim=1)
    rho_sq = c**2 * gram.sum().clamp_min(0.0)
    system = gram * mask[:, :, None] * mask[:, None, :] + torch.diag_embed(1.0 - mask)
    rhs = torch.stack([mask, b * mask], dim=-1)
    solution, _ = torch.linalg.solve_ex(system, rhs)
    a, e = solution[..., 0], solution[..., 1]
    qa, qb, qc = a.sum(dim=-1), e.sum(dim=-1), (b * e).sum(dim=-1)
    root = (qb**2 - qa * (qc - rho_sq)).sqrt()
    lam = (qb + root) / qa
    candidates = ((lam[:, None] * a - e) / root[:, None]).clamp_min(0.0) * mask
    total = candidates.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(candidates, 1.0 / k)
    valid = torch.isfinite(candidates).all(dim=-1, keepdim=True) & (total > 0)
    candidates = torch.where(valid, candidates / torch.where(valid, total, 1.0), uniform)
    values = cagrad_objective(gram, candidates, c)
    best = torch.where(torch.isfinite(values), values, torch.inf).argmin()
    return candidates.index_select(0, best.reshape(1)).squeeze(0)


def cagrad_coefficients(gram: torch.Tensor, c: float) -> torch.Tensor:
    """Coefficients ``v`` with CAGrad's update ``d = sum_m v_m g_m`` over the rows ``g_m``.

    ``d = (g0 + rho g_w / ||g_w||) / (1 + c^2)`` (Liu et al. 2021, Alg. 1, rescaled) with ``g0 =
    sum of rows`` gives ``v = (1 + rho w / ||g_w||) / (1 + c^2)``; ``c = 0`` gives ``v = 1``.
    """
    weights = cagrad_weights(gram, c)
    rho = c * gram.sum().clamp_min(0.0).sqrt()
    norm = (weights @ gram @ weights).clamp_min(TINY).sqrt()
    return (1.0 + rho * weights / norm) / (1.0 + c**2)


def cagrad_direction(grads: torch.Tensor, c: float) -> torch.Tensor:
    """CAGrad's update ``[P]`` from the ``[k, P]`` rows ``grads`` (Liu et al. 2021, Alg. 1)."""
    coef = cagrad_coefficients((grads @ grads.T).double(), c)
    return coef.to(grads.dtype) @ grads


class CAGrad(GradientMethod):
    """CAGrad (Liu et al. 2021, Alg. 1): the best worst-case update near the mean gradient.

    ``c`` is the radius of the ball around the mean gradient relative to its norm (the paper
    uses ``c`` in ``[0, 1)``; ``c = 0`` is vanilla training). The update is rescaled by
    ``1 / (1 + c^2)``.
    The exact solver enumerates the ``2^k - 1`` supports of ``w``, so ``k`` is at most 12.
    ``task_weights`` reports the weight of each cluster loss ``l_i`` in the last update (``v_i /
    k``, ``1 / k`` each before the first update).
    """

    last_weights: torch.Tensor

    def __init__(self, num_tasks: int, c: float = 0.4) -> None:
        super().__init__(num_tasks)
        if c < 0:
            raise ValueError(f"CAGrad's c must be non-negative, got {c}")
        if num_tasks > MAX_TASKS:
            raise ValueError(
                f"CAGrad's exact solver supports at most {MAX_TASKS} clusters, got {num_tasks}"
            )
        self.c = c
        self.register_buffer(
            "last_weights", torch.full((num_tasks,), 1.0 / num_tasks), persistent=False
        )

    def combine_gram(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        coef = cagrad_coefficients(gram, self.c)
        self.last_weights = (coef / self.num_tasks).float()
        return coef

    def task_weights(self) -> torch.Tensor:
        return self.last_weights
