"""Nash-MTL across timestep clusters (Navon et al. 2022, "Multi-Task Learning as a Bargaining
Game", ICML, Sec. 3; ANT, Go et al. 2023).

The Nash bargaining update is ``d = sum_i alpha_i g_i`` with ``alpha > 0`` solving
``G^T G alpha = 1 / alpha`` (Sec. 3.1; unique when the gradients are linearly independent).
With ``beta_i(alpha) = (G^T G alpha)_i`` and ``phi_i(alpha) = log alpha_i + log beta_i(alpha)``
the solution is the point where every ``phi_i = 0``. Following Sec. 3, it is reached through

    minimise  sum_i beta_i(alpha) + phi(alpha)   s.t.  phi_i(alpha) >= 0 for all i,

with ``phi = sum_i phi_i``: the constraints are convex (each ``phi_i`` is concave), minimising
``phi`` pushes every constraint to be tight, and ``sum_i beta_i`` keeps ``alpha`` small. The
objective is concave in its ``phi`` part, so it is solved by the convex-concave procedure: each
iteration replaces ``phi`` by its linearisation at the previous iterate ``alpha'``,

    minimise  1^T M alpha + s^T alpha   s.t.  log alpha + log(M alpha) >= 0,
    s = grad phi(alpha') = 1 / alpha' + M^T (1 / (M alpha')),

a convex problem (the linearisation majorises the concave ``phi``). ``M`` and ``s`` enter as cvxpy
Parameters, so the problem is DPP: it is built once and re-solved with new parameter values
without recompiling. The iterations start at ``alpha' = 1``; where ``(M alpha')_i <= 0`` (the
start need not be feasible) the ``1 / (M alpha')_i`` term is dropped, which keeps the objective
positive on the feasible set. In practice the first problem usually already makes every
constraint tight and the procedure stops after one solve.

As in the authors' setup (method-notes Sec. 3), ``alpha`` is solved on the Gram matrix of the
cluster-loss gradients ``g_i = grad l_i``, normalised by its Frobenius norm ``n``:
``alpha_hat`` solving ``(M / n) alpha_hat = 1 / alpha_hat`` maps back to
``alpha = alpha_hat / sqrt(n)``. The trainer's rows are the gradients of ``l_i / k``, so
``M = k^2 R R^T`` for the Gram matrix ``R R^T`` of the rows. The update is the authors':
the gradient of ``sum_i alpha_i l_i / k``, i.e. ``sum_i alpha_i row_i = (sum_i alpha_i g_i) / k``.
At the solution ``||sum_i alpha_i g_i||^2 = alpha^T M alpha = k``, so the update has norm
``1 / sqrt(k)`` whatever the gradients' size (scaling every ``g_i`` by ``s`` scales ``alpha`` by
``1 / s``), and the authors' gradient-norm clip at ``max_norm = 1`` only guards the steps
between solves. The weights are recomputed every ``update_every`` steps and reused in between
through the same loss.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import torch

from ant.methods.base import GradientMethod

logger = logging.getLogger(__name__)

ACCEPTED_STATUSES = ("optimal", "optimal_inaccurate")  # the values of cvxpy.OPTIMAL[_INACCURATE]


def nash_residual(gram: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``||G^T G alpha - 1 / alpha||``, zero at the bargaining solution (Navon et al., Sec. 3.1)."""
    return torch.linalg.vector_norm(gram @ alpha - 1.0 / alpha)


def linearisation_slope(gram: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The gradient of ``phi(alpha) = sum_i log alpha_i + log (M alpha)_i`` at ``alpha``.

    ``1 / alpha + M^T (1 / (M alpha))`` (Navon et al., Sec. 3), with the terms of non-positive
    ``(M alpha)_i`` dropped, where the logarithm is undefined.
    """
    gain = gram @ alpha
    positive = gain > 0
    inverse = torch.where(positive, 1.0 / torch.where(positive, gain, 1.0), 0.0)
    return 1.0 / alpha + gram.T @ inverse


class BargainingProblem:
    """One convex-concave iteration of Nash-MTL as a DPP cvxpy problem, built once.

    ``gram`` (the normalised ``G^T G``) and ``slope`` (the linearisation of ``phi``) are
    Parameters; :meth:`solve` sets them and returns the new ``alpha``.
    """

    def __init__(self, num_tasks: int) -> None:
        import cvxpy as cp  # two seconds to import: only when Nash-MTL is used

        self.alpha = cp.Variable(num_tasks)
        self.gram = cp.Parameter((num_tasks, num_tasks))
        self.slope = cp.Parameter(num_tasks)
        gain = self.gram @ self.alpha
        self.problem = cp.Problem(
            cp.Minimize(cp.sum(gain) + self.slope @ self.alpha),
            [cp.log(self.alpha) + cp.log(gain) >= 0],
        )

    def solve(
        self, gram: npt.NDArray[np.float64], slope: npt.NDArray[np.float64], solver: str
    ) -> npt.NDArray[np.float64] | None:
        """The minimiser for these parameter values, or ``None`` if the solver did not find one.

        Raises :class:`cvxpy.SolverError` when the solver itself fails.
        """
        self.gram.value = gram
        self.slope.value = slope
        self.problem.solve(solver=solver)
        if self.problem.status not in ACCEPTED_STATUSES or self.alpha.value is None:
            return None
        return np.asarray(self.alpha.value, dtype=np.float64)


def handles(problem: BargainingProblem, solver: str) -> bool:
    """Whether cvxpy can compile ``problem`` for ``solver`` (exponential cones are needed)."""
    import cvxpy as cp

    try:
        problem.problem.get_problem_data(solver)
    except cp.SolverError:
        return False
    return True


def check_solver(problem: BargainingProblem, solver: str) -> None:
    """Raise ``ValueError`` unless ``solver`` is installed and handles exponential cones."""
    import cvxpy as cp

    installed = cp.installed_solvers()
    if solver not in installed:
        raise ValueError(
            f"Nash-MTL solver '{solver}' is not installed; installed cvxpy solvers: "
            f"{', '.join(installed)}"
        )
    if not handles(problem, solver):
        capable = [name for name in installed if handles(problem, name)]
        raise ValueError(
            f"Nash-MTL solver '{solver}' cannot solve its exponential-cone problem; installed "
            f"solvers that can: {', '.join(capable)}"
        )


class NashMTL(GradientMethod):
    """Nash-MTL (Navon et al. 2022, Sec. 3): Nash bargaining weights over cluster gradients.

    ``update_every``: steps between solves (each needs the per-cluster gradients); ``max_iters``:
    convex-concave iterations per solve, stopping early when ``||M alpha - 1 / alpha|| <
    residual_tol`` or the iterate moves by less than ``alpha_tol`` (both on the normalised
    problem); ``max_norm``: gradient-norm clip applied by the trainer on every step (``None``:
    none); ``solver``: an installed cvxpy solver that handles exponential cones (CLARABEL, SCS).

    ``alpha`` and ``solver_failures`` are checkpointed buffers; ``alpha`` starts at 1. A failed
    solve (a solver error, a status other than optimal / optimal_inaccurate, or a non-finite or
    non-positive ``alpha``) is logged, counted and leaves ``alpha`` unchanged. Gradients that are
    not finite (an fp16 overflow, a step the GradScaler skips) or all zero leave ``alpha``
    unchanged without counting as a failure. ``task_weights`` reports ``alpha / sum(alpha)``, the
    relative weights of the cluster losses; the metric ``alpha_sum`` gives the scale.
    """

    alpha: torch.Tensor
    solver_failures: torch.Tensor

    def __init__(
        self,
        num_tasks: int,
        update_every: int = 25,
        max_iters: int = 20,
        max_norm: float | None = 1.0,
        solver: str = "CLARABEL",
        residual_tol: float = 1e-3,
        alpha_tol: float = 1e-6,
    ) -> None:
        super().__init__(num_tasks)
        if update_every < 1 or max_iters < 1:
            raise ValueError(
                f"Nash-MTL needs update_every >= 1 and max_iters >= 1, got {update_every} and "
                f"{max_iters}"
            )
        if max_norm is not None and max_norm <= 0:
            raise ValueError(f"Nash-MTL's max_norm must be positive or null, got {max_norm}")
        self.update_every = update_every
        self.max_iters = max_iters
        self.max_grad_norm = max_norm
        self.solver = solver
        self.residual_tol = residual_tol
        self.alpha_tol = alpha_tol
        self.bargaining = BargainingProblem(num_tasks)
        check_solver(self.bargaining, solver)
        self.register_buffer("alpha", torch.ones(num_tasks))
        self.register_buffer("solver_failures", torch.zeros((), dtype=torch.long))

    def wants_grads(self, step: int) -> bool:
        return (step - 1) % self.update_every == 0

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        """``sum_i alpha_i l_i / k``: its gradient is the update ``sum_i alpha_i row_i``."""
        return (self.alpha.to(losses.dtype) * losses).sum() / self.num_tasks

    def combine_gram(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Solve for ``alpha`` on the Gram matrix of the ``g_i``, ``k^2`` times that of the rows
        (the one host synchronisation); the update is ``sum_i alpha_i row_i``."""
        alpha = self.solve(gram.double().cpu() * self.num_tasks**2)
        if alpha is not None:
            self.alpha.copy_(alpha)
        return self.alpha.double()

    def solve(self, gram: torch.Tensor) -> torch.Tensor | None:
        """The bargaining ``alpha`` (``gram @ alpha = 1 / alpha``) for the CPU Gram matrix
        ``gram`` of the ``g_i``, or ``None`` when there is none to take (a failure, or gradients
        that are not finite or all zero)."""
        scale = torch.linalg.matrix_norm(gram)
        if not bool(torch.isfinite(scale)):
            logger.debug("Nash-MTL: non-finite per-cluster gradients; keeping the weights")
            return None
        if float(scale) <= 0:
            logger.warning("Nash-MTL: all per-cluster gradients are zero; keeping the weights")
            return None
        import cvxpy as cp

        normalised = gram / scale
        current = torch.ones(self.num_tasks, dtype=torch.float64)
        for _ in range(self.max_iters):
            slope = linearisation_slope(normalised, current)
            try:
                found = self.bargaining.solve(normalised.numpy(), slope.numpy(), self.solver)
            except cp.SolverError as exc:
                self._failed(f"solver {self.solver} raised {exc}")
                return None
            if found is None:
                status = self.bargaining.problem.status
                self._failed(f"solver {self.solver} ended with status {status}")
                return None
            update = torch.from_numpy(found)
            if not bool(torch.isfinite(update).all()) or bool((update <= 0).any()):
                self._failed(f"solver {self.solver} returned alpha {found.tolist()}")
                return None
            moved = float(torch.linalg.vector_norm(update - current))
            current = update
            if float(nash_residual(normalised, current)) < self.residual_tol:
                break
            if moved < self.alpha_tol:
                break
        return current / scale.sqrt()

    def _failed(self, reason: str) -> None:
        self.solver_failures += 1
        logger.warning(
            "Nash-MTL solve failed (%s); keeping the previous weights (%d failures so far)",
            reason,
            int(self.solver_failures),
        )

    def task_weights(self) -> torch.Tensor:
        return self.alpha / self.alpha.sum()

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"solver_failures": self.solver_failures, "alpha_sum": self.alpha.sum()}
