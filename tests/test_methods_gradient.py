"""Known answers for the gradient-based methods: PCGrad, CAGrad, IMTL-G and Nash-MTL."""

from __future__ import annotations

import io
import logging
import math
from typing import Any

import cvxpy as cp
import numpy as np
import pytest
import torch

from ant.core.plugins import registry
from ant.methods import GradientMethod
from ant.methods.cagrad import (
    CAGrad,
    cagrad_coefficients,
    cagrad_direction,
    cagrad_objective,
    cagrad_weights,
    supports,
)
from ant.methods.imtl import IMTL, imtl_direction, imtl_weights
from ant.methods.nashmtl import NashMTL, linearisation_slope, nash_residual
from ant.methods.pcgrad import (
    PCGrad,
    pcgrad_coefficients,
    pcgrad_direction,
    pcgrad_order,
    pcgrad_weights,
)


def random_grads(seed: int, k: int = 5, p: int = 40, shared: float = 0.0) -> torch.Tensor:
    """Random float64 gradients with a common component of weight ``shared`` and mixed norms."""
    gen = torch.Generator().manual_seed(seed)
    grads = torch.randn(k, p, generator=gen, dtype=torch.float64)
    grads += shared * torch.randn(p, generator=gen, dtype=torch.float64)
    return grads * (0.2 + 3 * torch.rand(k, 1, generator=gen, dtype=torch.float64))


def roundtrip(method: GradientMethod) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    state: dict[str, Any] = torch.load(buffer, weights_only=True)
    return state


# PCGrad (Yu et al. 2020, Alg. 1)


def test_pcgrad_projects_two_conflicting_gradients_by_hand() -> None:
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    order = torch.tensor([[1], [0]])
    # g1 . g2 = -1: g1_pc = g1 + 1/2 g2 = (0.5, 0.5); g2_pc = g2 + 1/1 g1 = (0, 1).
    coef = pcgrad_coefficients(grads @ grads.T, order)
    assert torch.allclose(coef, torch.tensor([[1.0, 0.5], [1.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(coef @ grads, torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=torch.float64))
    direction = pcgrad_direction(grads, order)
    assert torch.allclose(direction, torch.tensor([0.5, 1.5], dtype=torch.float64))


def test_pcgrad_without_conflicts_is_the_vanilla_gradient() -> None:
    grads = torch.rand(4, 30, dtype=torch.float64)
    order = pcgrad_order(4, torch.Generator().manual_seed(0))
    assert torch.allclose(pcgrad_direction(grads, order), grads.sum(0), atol=1e-12)


def reference_pcgrad(grads: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Alg. 1 of Yu et al. written plainly on the full vectors."""
    projected = []
    for i in range(grads.shape[0]):
        g_pc = grads[i].clone()
        for j in order[i].tolist():
            dot = torch.dot(g_pc, grads[j])
            if dot < 0:
                g_pc = g_pc - dot / torch.dot(grads[j], grads[j]) * grads[j]
        projected.append(g_pc)
    return torch.stack(projected).sum(0)


@pytest.mark.parametrize("seed", range(6))
def test_pcgrad_matches_a_plain_implementation(seed: int) -> None:
    k = 2 + seed
    grads = random_grads(seed, k=k, p=25)
    if seed == 3:
        grads[1] = 0.0
    order = pcgrad_order(k, torch.Generator().manual_seed(seed))
    expected = reference_pcgrad(grads, order)
    assert torch.allclose(pcgrad_direction(grads, order), expected, atol=1e-10)
    assert torch.allclose(pcgrad_direction(grads.float(), order), expected.float(), atol=1e-4)


def test_pcgrad_orders_are_permutations_of_the_other_tasks() -> None:
    gen = torch.Generator().manual_seed(0)
    orders = [pcgrad_order(5, gen) for _ in range(20)]
    for order in orders:
        for i, row in enumerate(order.tolist()):
            assert sorted(row) == [j for j in range(5) if j != i]
    assert len({tuple(o.reshape(-1).tolist()) for o in orders}) > 1
    assert pcgrad_order(1, gen).shape == (1, 0)


def test_pcgrad_method_uses_its_seeded_orders_and_reports_weights() -> None:
    method = PCGrad(num_tasks=5, seed=3)
    grads = random_grads(0).float()
    orders = torch.Generator().manual_seed(3)
    for _ in range(3):
        order = pcgrad_order(5, orders)
        expected = pcgrad_direction(grads, order)
        assert torch.allclose(method.combine_grads(grads, torch.ones(5)), expected, atol=1e-6)
    weights = pcgrad_weights((grads @ grads.T).double(), order) / 5
    assert torch.allclose(method.task_weights(), weights.float())
    assert method.task_weights().shape == (5,)


def test_pcgrad_state_round_trip_restores_the_next_order() -> None:
    method = PCGrad(num_tasks=5, seed=0)
    grads = random_grads(1).float()
    method.combine_grads(grads, torch.ones(5))
    restored = PCGrad(num_tasks=5, seed=7)
    restored.load_state_dict(roundtrip(method))
    assert torch.equal(restored.next_order(), method.next_order())
    assert torch.equal(
        restored.combine_grads(grads, torch.ones(5)), method.combine_grads(grads, torch.ones(5))
    )


# CAGrad (Liu et al. 2021, Alg. 1)


def cvxpy_cagrad(gram: np.ndarray, c: float) -> np.ndarray:
    """The same simplex problem solved by cvxpy, through a Cholesky factor of the Gram matrix."""
    k = gram.shape[0]
    factor = np.linalg.cholesky(gram)
    w = cp.Variable(k, nonneg=True)
    rho = c * np.sqrt(gram.sum())
    objective = cp.Minimize(gram.sum(1) @ w + rho * cp.norm(factor.T @ w))
    cp.Problem(objective, [cp.sum(w) == 1]).solve(solver="CLARABEL")
    return np.asarray(w.value)


def test_cagrad_with_c_zero_is_the_vanilla_gradient() -> None:
    grads = random_grads(0).float()
    assert torch.allclose(cagrad_direction(grads, 0.0), grads.sum(0), atol=1e-6)
    method = CAGrad(num_tasks=5, c=0.0)
    assert torch.allclose(method.combine_grads(grads, torch.ones(5)), grads.sum(0), atol=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_cagrad_matches_cvxpy(seed: int) -> None:
    k = 2 + seed % 5
    c = (0.1, 0.4, 0.8)[seed % 3]
    grads = random_grads(seed, k=k, shared=(0.0, 2.0, -1.0)[seed % 3])
    gram = grads @ grads.T
    w = cagrad_weights(gram, c)
    expected = torch.from_numpy(cvxpy_cagrad(gram.numpy(), c))
    assert torch.all(w >= 0) and w.sum().item() == pytest.approx(1.0)
    value, best = cagrad_objective(gram, w, c), cagrad_objective(gram, expected, c)
    assert value.item() <= best.item() + 1e-7 * abs(best.item())
    assert torch.allclose(w, expected, atol=1e-4)
    g0 = grads.sum(0)
    rho = c * g0.norm()
    g_w = expected @ grads
    d_expected = (g0 + rho * g_w / g_w.norm()) / (1 + c**2)
    d = cagrad_direction(grads, c)
    assert torch.allclose(d, d_expected, atol=1e-4 * d_expected.norm().item())


@pytest.mark.parametrize("seed", range(20))
def test_cagrad_never_conflicts_with_the_mean_gradient_beyond_the_bound(seed: int) -> None:
    c = 0.05 * seed
    grads = random_grads(seed, k=5, shared=0.5 * (seed % 4 - 1))
    g0 = grads.sum(0)
    d = cagrad_direction(grads, c) * (1 + c**2)
    # ||d - g0|| = c ||g0||, so <d, g0> >= (1 - c) ||g0||^2 >= 0 for c <= 1 (Liu et al., Sec. 3).
    assert (d - g0).norm().item() == pytest.approx(c * g0.norm().item(), rel=1e-9, abs=1e-12)
    assert torch.dot(d, g0).item() >= (1 - c) * g0.norm().item() ** 2 - 1e-9
    # d maximises the worst improvement over the ball, which holds g0 itself.
    assert (grads @ d).min().item() >= (grads @ g0).min().item() - 1e-9


def test_cagrad_enumerates_every_support() -> None:
    mask = supports(4)
    assert mask.shape == (15, 4)
    assert len({tuple(row.tolist()) for row in mask}) == 15 and bool(mask.any(dim=1).all())


def test_cagrad_weights_sum_the_update() -> None:
    grads = random_grads(4).float()
    method = CAGrad(num_tasks=5, c=0.5)
    direction = method.combine_grads(grads, torch.ones(5))
    assert torch.allclose(method.task_weights() * 5 @ grads, direction, atol=1e-5)
    coef = cagrad_coefficients((grads @ grads.T).double(), 0.5)
    assert torch.allclose(method.task_weights(), (coef / 5).float())


def test_cagrad_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        CAGrad(num_tasks=5, c=-0.1)
    with pytest.raises(ValueError, match="at most 12"):
        CAGrad(num_tasks=13)


# IMTL-G (Liu et al. 2021, Sec. 3.2)


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_imtl_update_has_equal_projections_on_every_unit_gradient(k: int) -> None:
    grads = random_grads(k, k=k, shared=1.0)
    d = imtl_direction(grads)
    units = grads / grads.norm(dim=1, keepdim=True)
    projections = units @ d
    assert torch.allclose(projections, projections[0].expand(k), rtol=1e-8)
    assert imtl_weights(grads @ grads.T).sum().item() == pytest.approx(1.0)


def test_imtl_matches_the_closed_form_on_full_vectors() -> None:
    grads = random_grads(11, k=5)
    units = grads / grads.norm(dim=1, keepdim=True)
    d_mat = grads[0] - grads[1:]
    u_mat = units[0] - units[1:]
    tail = grads[0] @ u_mat.T @ torch.linalg.inv(d_mat @ u_mat.T)
    alpha = torch.cat([(1 - tail.sum()).reshape(1), tail])
    assert torch.allclose(imtl_weights(grads @ grads.T), alpha, atol=1e-9)
    assert torch.allclose(imtl_direction(grads), 5 * alpha @ grads, atol=1e-9)


def test_imtl_with_one_task_returns_the_gradient() -> None:
    grads = random_grads(0, k=1).float()
    assert torch.equal(imtl_direction(grads), grads[0])
    assert torch.equal(IMTL(num_tasks=1).combine_grads(grads, torch.ones(1)), grads[0])


def test_imtl_on_orthogonal_equal_norms_is_the_vanilla_gradient() -> None:
    grads = 2 * torch.eye(4, 10, dtype=torch.float64)
    assert torch.allclose(imtl_weights(grads @ grads.T), torch.full((4,), 0.25, dtype=grads.dtype))
    assert torch.allclose(imtl_direction(grads), grads.sum(0))


def test_imtl_stays_finite_with_parallel_gradients() -> None:
    grads = random_grads(2, k=3)
    grads[2] = 3 * grads[1]
    alpha = imtl_weights(grads @ grads.T)
    assert bool(torch.isfinite(alpha).all()) and alpha.sum().item() == pytest.approx(1.0)
    projections = (grads / grads.norm(dim=1, keepdim=True)) @ imtl_direction(grads)
    assert torch.allclose(projections, projections[0].expand(3), rtol=1e-6)


# Nash-MTL (Navon et al. 2022, Sec. 3)


def test_nash_problem_is_dpp() -> None:
    method = NashMTL(num_tasks=5)
    assert method.bargaining.problem.is_dcp(dpp=True)


@pytest.mark.parametrize("seed", range(8))
def test_nash_solution_satisfies_the_bargaining_equation(seed: int) -> None:
    method = NashMTL(num_tasks=5)
    rows = random_grads(seed, k=5, p=200, shared=(0.0, 1.0)[seed % 2]).float()
    direction = method.combine_grads(rows, torch.ones(5))
    grads = 5 * rows.double()  # the rows are the gradients of l_i / k
    gram = grads @ grads.T
    alpha = method.alpha.double()
    assert bool((alpha > 0).all())
    assert torch.allclose(gram @ alpha, 1 / alpha, rtol=1e-3)
    assert int(method.solver_failures) == 0
    assert torch.allclose(direction, method.alpha @ rows)
    # Every cluster loss gets the inner product (1 / alpha_i) / k with the update.
    assert torch.allclose(grads @ direction.double(), 1 / alpha / 5, rtol=1e-3)


@pytest.mark.parametrize("k", [2, 5, 8])
def test_nash_update_has_the_authors_norm(k: int) -> None:
    """Navon et al.'s update is ``grad of sum_i alpha_i l_i / k``: norm ``1 / sqrt(k)``, so
    their clip at 1 does not fire on a solve step (ours was ``sqrt(k)``, clipped every step)."""
    for seed in range(4):
        rows = random_grads(seed, k=k, p=300, shared=0.5)
        method = NashMTL(num_tasks=k)
        direction = method.combine_grads(rows, torch.ones(k))
        norm = float(direction.norm())
        assert norm == pytest.approx(1 / math.sqrt(k), rel=2e-3)
        assert norm < method.max_grad_norm
        # The authors' recipe from scratch: solve on the g_i, update (sum_i alpha_i g_i) / k.
        grads = k * rows
        reference = NashMTL(num_tasks=k).solve(grads @ grads.T)
        assert reference is not None
        torch.testing.assert_close(direction, (reference @ grads) / k, rtol=1e-6, atol=1e-9)


def test_nash_weights_of_orthogonal_gradients_are_inverse_norms() -> None:
    norms = torch.tensor([0.5, 1.0, 2.0, 4.0])
    grads = torch.diag(norms) @ torch.eye(4, 7)
    method = NashMTL(num_tasks=4)
    method.combine_grads(grads, torch.ones(4))
    # Rows are gradients of l_i / k: the cluster losses' gradients have norms 4 * norms.
    assert torch.allclose(method.alpha, 1 / (4 * norms), rtol=1e-3)
    assert torch.allclose(method.task_weights(), (1 / norms) / (1 / norms).sum(), rtol=1e-3)


def test_nash_loss_between_solves_has_the_solve_update_as_gradient() -> None:
    method = NashMTL(num_tasks=3)
    rows = random_grads(5, k=3, p=6).float()
    direction = method.combine_grads(rows, torch.ones(3))
    theta = torch.zeros(6, requires_grad=True)
    losses = 3 * rows @ theta  # the gradient of l_i / k is row i
    method.combine(losses).backward()
    assert theta.grad is not None
    assert torch.allclose(theta.grad, direction, atol=1e-6)


def test_nash_solves_on_the_first_step_and_every_update_every_steps() -> None:
    method = NashMTL(num_tasks=5, update_every=25)
    assert [s for s in range(1, 80) if method.wants_grads(s)] == [1, 26, 51, 76]
    assert method.max_grad_norm == 1.0
    assert NashMTL(num_tasks=5, max_norm=None).max_grad_norm is None


def test_nash_solver_failure_is_logged_counted_and_keeps_alpha(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    method = NashMTL(num_tasks=4)
    grads = random_grads(3, k=4).float()
    method.combine_grads(grads, torch.ones(4))
    solved = method.alpha.clone()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise cp.SolverError("forced")

    monkeypatch.setattr(method.bargaining.problem, "solve", broken)
    with caplog.at_level(logging.WARNING, logger="ant.methods.nashmtl"):
        direction = method.combine_grads(2 * grads, torch.ones(4))
        method.combine_grads(grads, torch.ones(4))
    assert int(method.solver_failures) == 2
    assert torch.equal(method.alpha, solved)
    assert torch.allclose(direction, solved @ (2 * grads))
    failures = [r for r in caplog.records if "Nash-MTL solve failed" in r.getMessage()]
    assert len(failures) == 2 and "forced" in failures[0].getMessage()
    assert method.metrics()["solver_failures"].item() == 2


def test_nash_bad_status_counts_as_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    method = NashMTL(num_tasks=3)
    monkeypatch.setattr(method.bargaining, "solve", lambda *args: None)
    method.combine_grads(random_grads(0, k=3).float(), torch.ones(3))
    assert int(method.solver_failures) == 1 and torch.equal(method.alpha, torch.ones(3))


def test_nash_keeps_alpha_for_zero_or_overflowing_gradients() -> None:
    method = NashMTL(num_tasks=3)
    grads = random_grads(1, k=3).float()
    method.combine_grads(grads, torch.ones(3))
    solved = method.alpha.clone()
    method.combine_grads(torch.zeros(3, 5), torch.ones(3))
    overflow = grads.clone()
    overflow[0, 0] = torch.inf
    assert not bool(torch.isfinite(method.combine_grads(overflow, torch.ones(3))).all())
    assert torch.equal(method.alpha, solved) and int(method.solver_failures) == 0


def test_nash_rejects_uninstalled_and_unsuitable_solvers() -> None:
    with pytest.raises(ValueError, match="not installed") as info:
        NashMTL(num_tasks=3, solver="NOT_A_SOLVER")
    for name in cp.installed_solvers():
        assert name in str(info.value)
    unsuitable = [s for s in ("OSQP", "HIGHS") if s in cp.installed_solvers()]
    for name in unsuitable:
        with pytest.raises(ValueError, match="exponential-cone"):
            NashMTL(num_tasks=3, solver=name)


def test_nash_helpers_agree_with_the_definitions() -> None:
    gram = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    alpha = torch.tensor([0.7, 1.3], dtype=torch.float64)
    gain = gram @ alpha
    expected = 1 / alpha + gram.T @ (1 / gain)
    assert torch.allclose(linearisation_slope(gram, alpha), expected)
    assert nash_residual(gram, alpha).item() == pytest.approx((gain - 1 / alpha).norm().item())
    negative = torch.tensor([[1.0, -3.0], [-3.0, 1.0]], dtype=torch.float64)
    ones = torch.ones(2, dtype=torch.float64)
    assert torch.equal(linearisation_slope(negative, ones), ones)


def test_nash_state_round_trip_keeps_alpha_and_failures() -> None:
    method = NashMTL(num_tasks=5, update_every=3)
    grads = random_grads(6).float()
    method.combine_grads(grads, torch.ones(5))
    method.solver_failures += 4
    restored = NashMTL(num_tasks=5, update_every=3)
    restored.load_state_dict(roundtrip(method))
    assert torch.equal(restored.alpha, method.alpha)
    assert int(restored.solver_failures) == 4
    losses = torch.rand(5)
    assert torch.equal(restored.combine(losses), method.combine(losses))


# All four


@pytest.mark.parametrize(
    ("name", "cls"), [("pcgrad", PCGrad), ("cagrad", CAGrad), ("imtl", IMTL), ("nashmtl", NashMTL)]
)
def test_registered_and_state_round_trip_preserves_the_update(name: str, cls: type) -> None:
    method = registry("method").get(name).build(num_tasks=5)
    assert isinstance(method, cls) and isinstance(method, GradientMethod)
    grads = random_grads(8).float()
    method.combine_grads(grads, torch.ones(5))
    fresh = registry("method").get(name).build(num_tasks=5)
    fresh.load_state_dict(roundtrip(method))
    other = random_grads(9).float()
    assert torch.allclose(
        fresh.combine_grads(other, torch.ones(5)), method.combine_grads(other, torch.ones(5))
    )
