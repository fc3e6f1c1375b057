"""Known answers for the loss-based methods shipped with the foundation."""

from __future__ import annotations

import pytest
import torch

from ant.clustering import equal_intervals, validate_intervals
from ant.methods.uncertainty import UncertaintyWeighting, uncertainty_weighted_loss
from ant.methods.vanilla import Vanilla


def test_uncertainty_weighting_reaches_its_closed_form_optimum() -> None:
    losses = torch.tensor([0.5, 0.1, 0.02, 0.3, 1.2])
    method = UncertaintyWeighting(num_tasks=5)
    optimizer = torch.optim.Adam(method.parameters(), lr=0.05)
    for _ in range(2000):
        optimizer.zero_grad()
        method(losses).backward()
        optimizer.step()
    assert torch.allclose(method.log_var.exp(), losses / 5, rtol=1e-3)
    weights = method.task_weights()
    assert torch.allclose(weights, 0.5 * 5 / losses, rtol=1e-3)


def test_uncertainty_weighted_loss_at_zero_is_half_the_mean() -> None:
    losses = torch.tensor([1.0, 3.0])
    assert uncertainty_weighted_loss(losses, torch.zeros(2)).item() == pytest.approx(1.0)


def test_uncertainty_weighting_has_its_own_optimizer_group() -> None:
    (group,) = UncertaintyWeighting(num_tasks=3).param_groups()
    assert group["lr"] == 0.025 and group["weight_decay"] == 0.0
    assert group["params"][0].shape == (3,)


def test_vanilla_is_the_mean_with_uniform_timesteps() -> None:
    method = Vanilla(num_tasks=4)
    assert method(torch.tensor([1.0, 2.0, 3.0, 6.0])).item() == pytest.approx(3.0)
    assert method.timestep_sampling == "uniform"
    assert UncertaintyWeighting.timestep_sampling == "stratified"


@pytest.mark.parametrize(("num_timesteps", "k"), [(1000, 5), (1000, 3), (7, 7), (10, 1)])
def test_equal_intervals_tile_the_timesteps(num_timesteps: int, k: int) -> None:
    intervals = equal_intervals(num_timesteps, k)
    validate_intervals(intervals, num_timesteps)
    widths = [end - start + 1 for start, end in intervals]
    assert len(intervals) == k and max(widths) - min(widths) <= 1
