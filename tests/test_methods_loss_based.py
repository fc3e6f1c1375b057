"""Known answers for the loss-based cluster methods FAMO, DWA and RLW, and their checkpoints."""

from __future__ import annotations

import io

import pytest
import torch

from ant.methods import LossMethod
from ant.methods.dwa import DWA, dwa_weights
from ant.methods.famo import FAMO, adam_step, famo_logit_gradient, famo_objective
from ant.methods.rlw import RLW


def round_trip(method: LossMethod) -> dict[str, object]:
    """The method's state_dict after torch.save and torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    state: dict[str, object] = torch.load(buffer, weights_only=True)
    return state


def two_task_losses(steps: int) -> list[torch.Tensor]:
    """Task 0's loss falls by 5% per step, task 1's by 0.5%."""
    return [torch.tensor([0.95**s, 0.995**s]) for s in range(steps)]


def test_famo_objective_gradient_is_proportional_to_weight_over_loss() -> None:
    method = FAMO(num_tasks=3)
    method.logits.copy_(torch.tensor([0.5, -1.0, 0.2]))
    losses = torch.tensor([0.4, 0.1, 2.0], requires_grad=True)
    method(losses).backward()
    z = torch.softmax(method.logits, dim=0)
    assert losses.grad is not None
    expected = (z / losses.detach()) / (z / losses.detach()).sum()
    assert torch.allclose(losses.grad, expected, rtol=1e-5)
    assert losses.grad.sum().item() == pytest.approx(1.0)


def test_famo_objective_with_equal_losses_has_the_vanilla_gradient() -> None:
    losses = torch.full((4,), 0.3, requires_grad=True)
    famo_objective(losses, torch.full((4,), 0.25)).backward()
    assert losses.grad is not None and torch.allclose(losses.grad, torch.full((4,), 0.25))


def test_famo_logit_gradient_is_the_softmax_jacobian_product() -> None:
    logits = torch.tensor([0.3, -0.2, 1.0], requires_grad=True)
    before, after = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.5, 1.9, 0.45])
    delta = torch.log(before) - torch.log(after)
    (expected,) = torch.autograd.grad(torch.softmax(logits, 0), logits, grad_outputs=delta)
    assert torch.allclose(famo_logit_gradient(logits.detach(), before, after), expected, atol=1e-7)


def test_adam_step_matches_torch_adam() -> None:
    param = torch.tensor([0.1, -0.3, 0.7], requires_grad=True)
    optimizer = torch.optim.Adam([param], lr=0.025, weight_decay=1e-3)
    mine, m, v = param.detach().clone(), torch.zeros(3), torch.zeros(3)
    for step in range(1, 6):
        grad = torch.tensor([0.2, -0.1, 0.05]) * step
        param.grad = grad.clone()
        optimizer.step()
        mine, m, v = adam_step(mine, grad, m, v, step, lr=0.025, weight_decay=1e-3)
    assert torch.allclose(mine, param.detach(), atol=1e-7)


def test_famo_moves_weight_to_the_slowly_improving_task() -> None:
    method = FAMO(num_tasks=2, delta="cross_batch")
    for losses in two_task_losses(100):
        method.observe(losses)
    z = method.task_weights()
    assert z[1] > 0.6 > z[0]
    assert z.sum().item() == pytest.approx(1.0)
    assert method.param_groups() == [] and not list(method.parameters())


def _regression_weights(delta: str, seed: int, steps: int = 2000) -> torch.Tensor:
    """FAMO's weights after ``steps`` SGD steps on three noisy regression tasks sharing one
    linear model, the third target largest (a fresh batch each step, like diffusion training)."""
    gen = torch.Generator().manual_seed(seed)
    k, d, n = 3, 8, 16
    targets = torch.randn(k, d, generator=gen) * torch.tensor([0.5, 1.0, 2.0])[:, None]
    w = torch.zeros(d, requires_grad=True)
    method = FAMO(num_tasks=k, delta=delta)
    optimizer = torch.optim.SGD([w], lr=0.01)
    for _ in range(steps):
        x = torch.randn(n, d, generator=gen)
        y = targets @ x.T + torch.randn(k, n, generator=gen)
        losses = ((x @ w)[None] - y).pow(2).mean(1)
        optimizer.zero_grad()
        method(losses).backward()
        optimizer.step()
        if method.reevaluates_batch:
            with torch.no_grad():
                after = ((x @ w)[None] - y).pow(2).mean(1)
            method.observe_update(losses.detach(), after)
        else:
            method.observe(losses.detach())
    return method.task_weights()


@pytest.mark.parametrize("seed", range(3))
def test_famo_same_batch_moves_the_weights_where_cross_batch_does_not(seed: int) -> None:
    """The loss change of one update, measured on the next batch, is buried in the change of
    batch (and telescopes over steps): the weights stay uniform. Measured on the same batch,
    as the authors do, it moves them to the task that improves least per update."""
    same = _regression_weights("same_batch", seed)
    cross = _regression_weights("cross_batch", seed)
    assert float(same[2]) > 0.5
    assert float((cross - 1 / 3).abs().max()) < 0.04


def test_famo_defaults_are_the_reference_versions() -> None:
    method = FAMO(num_tasks=4)
    assert (method.delta, method.reevaluates_batch, method.max_grad_norm) == (
        "same_batch",
        True,
        1.0,
    )
    assert not FAMO(num_tasks=4, delta="cross_batch").reevaluates_batch
    assert FAMO(num_tasks=4, max_norm=None).max_grad_norm is None
    with pytest.raises(ValueError, match="delta must be one of same_batch, cross_batch"):
        FAMO(num_tasks=4, delta="sometimes")


def test_famo_first_observation_only_records_the_losses() -> None:
    method = FAMO(num_tasks=2, delta="cross_batch")
    method.observe(torch.tensor([1.0, 2.0]))
    assert torch.equal(method.logits, torch.zeros(2))
    assert torch.equal(method.previous, torch.tensor([1.0, 2.0]))


def test_famo_state_dict_round_trip_continues_identically() -> None:
    sequence = two_task_losses(40)
    method = FAMO(num_tasks=2, delta="cross_batch")
    for losses in sequence[:20]:
        method.observe(losses)
    restored = FAMO(num_tasks=2, delta="cross_batch")
    restored.load_state_dict(round_trip(method))
    for losses in sequence[20:]:
        method.observe(losses)
        restored.observe(losses)
    assert torch.equal(method.logits, restored.logits)
    assert restored.steps == method.steps == 39
    probe = torch.tensor([0.3, 0.6])
    assert torch.equal(method(probe), restored(probe))


def test_dwa_weights_for_equal_ratios_are_one() -> None:
    recent, earlier = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([1.0, 2.0, 4.0])
    assert torch.allclose(dwa_weights(recent, earlier, 2.0), torch.ones(3))


def test_dwa_weights_by_hand() -> None:
    recent, earlier = torch.tensor([0.9, 0.5]), torch.tensor([1.0, 1.0])
    a, b = torch.exp(torch.tensor(0.45)), torch.exp(torch.tensor(0.25))
    expected = 2 * torch.stack([a, b]) / (a + b)
    assert torch.allclose(dwa_weights(recent, earlier, 2.0), expected)


def test_dwa_is_vanilla_for_two_periods_then_weighs_by_period_averages() -> None:
    method = DWA(num_tasks=2, temperature=2.0, period=3)
    losses = torch.tensor([3.0, 5.0])
    first = [torch.tensor([1.0, 1.0]), torch.tensor([1.2, 1.0]), torch.tensor([0.8, 1.0])]
    second = [torch.tensor([0.9, 0.5]), torch.tensor([0.9, 0.4]), torch.tensor([0.9, 0.6])]
    for observed in first + second[:2]:
        method.observe(observed)
        assert method(losses).item() == pytest.approx(4.0)
    method.observe(second[2])
    weights = dwa_weights(torch.tensor([0.9, 0.5]), torch.tensor([1.0, 1.0]), 2.0)
    assert torch.allclose(method.weights, weights)
    assert method(losses).item() == pytest.approx(float((weights * losses).sum() / 2))
    assert torch.allclose(method.task_weights(), weights / 2)


def test_dwa_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    sequence = [torch.rand(3) + 0.1 for _ in range(30)]
    method = DWA(num_tasks=3, period=4)
    for losses in sequence[:14]:
        method.observe(losses)
    restored = DWA(num_tasks=3, period=4)
    restored.load_state_dict(round_trip(method))
    assert restored.steps_in_period == 2 and restored.periods_done == 3
    for losses in sequence[14:]:
        method.observe(losses)
        restored.observe(losses)
    assert torch.equal(method.weights, restored.weights)
    assert not torch.equal(method.weights, torch.ones(3))


def test_rlw_weights_are_a_reproducible_distribution() -> None:
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    first, second = RLW(num_tasks=4, seed=7), RLW(num_tasks=4, seed=7)
    draws = []
    for _ in range(5):
        value = first(losses)
        weights = first.task_weights()
        assert weights.sum().item() == pytest.approx(1.0) and bool((weights > 0).all())
        assert value.item() == pytest.approx(float((weights * losses).sum()))
        second(losses)
        assert torch.equal(weights, second.task_weights())
        draws.append(weights)
    assert not torch.equal(draws[0], draws[1])
    other = RLW(num_tasks=4, seed=8)
    other(losses)
    assert not torch.equal(other.task_weights(), draws[-1])


def test_rlw_gradient_is_the_drawn_weights() -> None:
    method = RLW(num_tasks=3)
    losses = torch.tensor([0.2, 0.5, 0.9], requires_grad=True)
    method(losses).backward()
    assert losses.grad is not None and torch.equal(losses.grad, method.task_weights())


def test_rlw_state_dict_round_trip_continues_the_sequence() -> None:
    losses = torch.ones(3)
    method = RLW(num_tasks=3, seed=3)
    for _ in range(4):
        method(losses)
    restored = RLW(num_tasks=3, seed=99)
    restored.load_state_dict(round_trip(method))
    for _ in range(3):
        method(losses)
        restored(losses)
        assert torch.equal(method.task_weights(), restored.task_weights())
