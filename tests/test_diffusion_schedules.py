"""Noise schedules, SNR and timestep respacing against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from ant.diffusion import GaussianDiffusion
from ant.diffusion.respace import respaced_betas, space_timesteps
from ant.diffusion.schedules import (
    alphas_cumprod,
    cosine_betas,
    get_betas,
    linear_betas,
    log_snr,
    snr,
)


def test_linear_endpoints_for_1000_steps() -> None:
    betas = linear_betas(1000)
    assert betas.dtype == torch.float64
    assert betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    steps = betas[1:] - betas[:-1]
    torch.testing.assert_close(steps, torch.full_like(steps, (0.02 - 1e-4) / 999))


def test_linear_endpoints_scale_with_the_number_of_steps() -> None:
    betas = linear_betas(250)
    assert betas[0].item() == pytest.approx(4e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.08, rel=1e-12)


def _cosine_f(tau: float, s: float = 0.008) -> float:
    return math.cos((tau + s) / (1 + s) * math.pi / 2) ** 2


@pytest.mark.parametrize("num_timesteps", [1000, 100])
def test_cosine_alphas_cumprod_follow_the_closed_form(num_timesteps: int) -> None:
    betas = cosine_betas(num_timesteps)
    abar = alphas_cumprod(betas)
    unclipped = int((betas < 0.999).long().cumprod(0).sum())
    assert unclipped >= num_timesteps - 2
    expected = torch.tensor(
        [_cosine_f((t + 1) / num_timesteps) / _cosine_f(0.0) for t in range(unclipped)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(abar[:unclipped], expected, rtol=1e-10, atol=1e-15)
    assert betas.max().item() == pytest.approx(0.999)


@pytest.mark.parametrize("name", ["linear", "cosine", "squaredcos_cap_v2"])
def test_schedules_are_monotone(name: str) -> None:
    betas = get_betas(name, 1000)
    abar = alphas_cumprod(betas)
    assert bool((betas[1:] >= betas[:-1]).all())
    assert bool((abar[1:] < abar[:-1]).all())
    assert 0 < abar[-1].item() < abar[0].item() < 1


def test_unknown_schedule_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown noise schedule"):
        get_betas("quadratic")


def test_snr_and_log_snr_are_consistent() -> None:
    abar = alphas_cumprod(get_betas("cosine"))
    ratio, log_ratio = snr(abar), log_snr(abar)
    torch.testing.assert_close(ratio, abar / (1 - abar), rtol=1e-12, atol=0.0)
    torch.testing.assert_close(log_ratio, torch.log(ratio), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.sigmoid(log_ratio), abar, rtol=1e-12, atol=1e-15)
    assert bool((log_ratio[1:] < log_ratio[:-1]).all())


def test_diffusion_snr_lookup() -> None:
    diffusion = GaussianDiffusion.from_schedule("linear")
    t = torch.tensor([0, 10, 999])
    abar = diffusion.alphas_cumprod[t]
    torch.testing.assert_close(diffusion.snr(t), (abar / (1 - abar)).float())
    torch.testing.assert_close(diffusion.log_snr(t), torch.log(abar / (1 - abar)).float())


def _guided_diffusion_spacing(num_timesteps: int, count: int) -> list[int]:
    """The reference: guided-diffusion's respace.space_timesteps(T, [count]), one section."""
    stride = (num_timesteps - 1) / (count - 1)
    steps, index = [], 0.0
    for _ in range(count):
        steps.append(round(index))
        index += stride
    return sorted(set(steps))


@pytest.mark.parametrize("timesteps", [1000, 50, 37])
def test_space_timesteps_equals_guided_diffusion_for_every_count(timesteps: int) -> None:
    for count in range(2, timesteps + 1):
        kept = space_timesteps(timesteps, count)
        assert kept == _guided_diffusion_spacing(timesteps, count), count
        assert len(kept) == count and kept[0] == 0 and kept[-1] == timesteps - 1


def test_space_timesteps_known_values() -> None:
    kept = space_timesteps(1000, 250)
    assert len(kept) == 250
    assert kept[:5] == [0, 4, 8, 12, 16]
    assert kept[-3:] == [991, 995, 999]
    assert space_timesteps(10, 4) == [0, 3, 6, 9]
    assert space_timesteps(1000, 1000) == list(range(1000))
    # step 10 of 21: 10 * 999 / 20 = 499.5, a tie; guided-diffusion's float sum lands on 499.
    assert space_timesteps(1000, 21)[10] == 499
    with pytest.raises(ValueError):
        space_timesteps(1000, 1)
    with pytest.raises(ValueError):
        space_timesteps(100, 101)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("count", [250, 50, 2])
def test_respaced_betas_reproduce_the_kept_alphas_cumprod(name: str, count: int) -> None:
    abar = alphas_cumprod(get_betas(name))
    kept = space_timesteps(1000, count)
    betas = respaced_betas(abar, kept)
    assert betas.shape == (count,)
    assert bool(((betas > 0) & (betas < 1)).all())
    # Up to float64 rounding: 1 - beta loses relative precision when beta is close to 1.
    torch.testing.assert_close(alphas_cumprod(betas), abar[kept], rtol=1e-10, atol=1e-15)
    respaced = GaussianDiffusion.from_betas(get_betas(name)).respaced(count)
    assert torch.equal(respaced.alphas_cumprod, abar[kept])
    torch.testing.assert_close(respaced.betas, betas, rtol=1e-12, atol=0.0)


def test_respaced_process_maps_to_original_timesteps() -> None:
    diffusion = GaussianDiffusion.from_schedule("cosine", learn_sigma=True)
    respaced = diffusion.respaced(100)
    kept = space_timesteps(1000, 100)
    assert respaced.num_timesteps == 100
    assert respaced.learn_sigma and respaced.prediction_type == "eps"
    assert respaced.timestep_map.tolist() == kept
    torch.testing.assert_close(respaced.alphas_cumprod, diffusion.alphas_cumprod[kept])
    twice = respaced.respaced([0, 50, 99])
    assert twice.timestep_map.tolist() == [kept[0], kept[50], kept[99]]
    t = torch.tensor([2, 0, 1])
    assert twice.model_timesteps(t).tolist() == [kept[99], kept[0], kept[50]]
    assert diffusion.respaced(1000) is diffusion
    with pytest.raises(ValueError, match="increasing"):
        diffusion.respaced([5, 3])
