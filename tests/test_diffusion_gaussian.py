"""Forward process, posterior and prediction conversions."""

from __future__ import annotations

import itertools

import pytest
import torch

from ant.diffusion import PREDICTION_TYPES, GaussianDiffusion
from ant.diffusion.gaussian import convert_prediction, training_target


def _batch(
    diffusion: GaussianDiffusion, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, 4, 4, generator=generator, dtype=dtype)
    noise = torch.randn(6, 3, 4, 4, generator=generator, dtype=dtype)
    t = torch.tensor([0, 1, 17, 500, 998, 999])
    return x0, noise, t, diffusion.q_sample(x0, t, noise)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_q_sample_matches_the_closed_form(schedule: str) -> None:
    diffusion = GaussianDiffusion.from_schedule(schedule)
    x0, noise, t, x_t = _batch(diffusion)
    abar = diffusion.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * noise)


def test_float32_inputs_get_float32_coefficients() -> None:
    diffusion = GaussianDiffusion.from_schedule("linear")
    x0, noise, t, _ = _batch(diffusion, torch.float32)
    assert diffusion.q_sample(x0, t, noise).dtype == torch.float32


@pytest.mark.parametrize(("source", "target"), list(itertools.product(PREDICTION_TYPES, repeat=2)))
def test_conversions_agree_with_the_true_quantities(source: str, target: str) -> None:
    diffusion = GaussianDiffusion.from_schedule("cosine")
    x0, noise, t, x_t = _batch(diffusion)
    truth = {
        "eps": noise,
        "x0": x0,
        "v": GaussianDiffusion.from_schedule("cosine", prediction_type="v").training_target(
            x0, noise, t
        ),
    }
    converted = diffusion.convert(truth[source], x_t, t, source, target)  # type: ignore[arg-type]
    torch.testing.assert_close(converted, truth[target], rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_conversions_round_trip(kind: str) -> None:
    diffusion = GaussianDiffusion.from_schedule("linear")
    _, _, t, x_t = _batch(diffusion)
    value = torch.randn_like(x_t)
    for other in PREDICTION_TYPES:
        there = diffusion.convert(value, x_t, t, kind, other)  # type: ignore[arg-type]
        back = diffusion.convert(there, x_t, t, other, kind)  # type: ignore[arg-type]
        torch.testing.assert_close(back, value, rtol=1e-7, atol=1e-7)


def test_v_target_is_alpha_eps_minus_sigma_x0() -> None:
    alpha, sigma = torch.tensor(0.6), torch.tensor(0.8)
    x0, eps = torch.tensor(2.0), torch.tensor(-1.0)
    assert training_target(x0, eps, alpha, sigma, "v").item() == pytest.approx(-0.6 - 1.6)
    assert training_target(x0, eps, alpha, sigma, "eps").item() == -1.0
    assert training_target(x0, eps, alpha, sigma, "x0").item() == 2.0
    with pytest.raises(ValueError):
        convert_prediction(x0, x0, alpha, sigma, "eps", "score")  # type: ignore[arg-type]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_matches_bayes_rule(schedule: str) -> None:
    # q(x_{t-1} | x0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}) and
    # q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t): multiply the two Gaussians.
    diffusion = GaussianDiffusion.from_schedule(schedule)
    x0, _, t, x_t = _batch(diffusion)
    t, x0, x_t = t[1:], x0[1:], x_t[1:]
    abar_prev = diffusion.alphas_cumprod[t - 1].view(-1, 1, 1, 1)
    beta = diffusion.betas[t].view(-1, 1, 1, 1)
    precision = 1 / (1 - abar_prev) + (1 - beta) / beta
    expected_var = 1 / precision
    expected_mean = expected_var * (
        abar_prev.sqrt() * x0 / (1 - abar_prev) + (1 - beta).sqrt() * x_t / beta
    )
    mean, var, log_var = diffusion.q_posterior(x0, x_t, t)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(var, expected_var, rtol=1e-9, atol=0.0)
    torch.testing.assert_close(log_var, expected_var.log(), rtol=1e-9, atol=1e-9)


def test_posterior_at_t0_returns_x0_and_a_clipped_log_variance() -> None:
    diffusion = GaussianDiffusion.from_schedule("linear")
    x0 = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    x_t = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    mean, var, log_var = diffusion.q_posterior(x0, x_t, torch.tensor([0, 1]))
    torch.testing.assert_close(mean[0], x0[0])
    assert var[0].item() == 0.0
    assert log_var[0].item() == pytest.approx(log_var[1].item())


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        GaussianDiffusion([0.5, 1.0])
    with pytest.raises(ValueError, match="prediction type"):
        GaussianDiffusion.from_schedule(prediction_type="score")  # type: ignore[arg-type]
    diffusion = GaussianDiffusion.from_schedule()
    with pytest.raises(ValueError, match="timesteps must have shape"):
        diffusion.q_sample(torch.zeros(2, 1), torch.tensor([1]), torch.zeros(2, 1))


def test_indexing_needs_no_host_values() -> None:
    # On the meta device tensors have no data: any .item() or Python branch on a value raises.
    diffusion = GaussianDiffusion.from_schedule("cosine", learn_sigma=True, prediction_type="v")
    x0 = torch.empty(4, 2, 8, 8, device="meta")
    t = torch.empty(4, dtype=torch.long, device="meta")
    x_t = diffusion.q_sample(x0, t, x0)
    losses = diffusion.training_losses(torch.empty(4, 4, 8, 8, device="meta"), x0, x_t, t, x0)
    assert losses.loss.shape == (4,)
    assert losses.loss.device.type == "meta"
    assert diffusion.model_timesteps(t).device.type == "meta"
