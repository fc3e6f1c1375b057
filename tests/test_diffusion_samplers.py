"""DDPM and DDIM sampling on Gaussian data, where the optimal denoiser is known in closed form.

For data x0 ~ N(mu, s^2) and x_t = sqrt(a) x0 + sqrt(1 - a) eps (a = alpha-bar_t), x_t and eps are
jointly Gaussian with Var(x_t) = a s^2 + 1 - a and Cov(x_t, eps) = sqrt(1 - a), so the optimal
(posterior-mean) predictions are

    eps*(x_t) = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a),
    x0*(x_t) = mu + sqrt(a) s^2 (x_t - sqrt(a) mu) / (a s^2 + 1 - a).

Both are affine in x_t, so every sampler step is affine plus Gaussian noise and the mean and
variance of the samples can be propagated exactly from x_T ~ N(0, 1): the samplers must match
that to sampling error, and the data distribution up to the discretisation error of few steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch

from ant.diffusion import (
    GaussianDiffusion,
    classifier_free_guidance,
    guidance_combine,
    sample,
    space_timesteps,
)
from ant.diffusion.gaussian import PredictionType

N = 20_000
MU, STD = 0.5, 0.5


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Hundreds of small elementwise steps: extra intra-op threads only add synchronisation,
    # which on a busy machine costs far more than the arithmetic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _optimal(
    abar_table: torch.Tensor, x: torch.Tensor, t: torch.Tensor, mu: float, var: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """eps*(x_t) and x0*(x_t) for data N(mu, var); ``t`` indexes the full-length schedule."""
    a = abar_table.to(x.dtype)[t].view(-1, *([1] * (x.ndim - 1)))
    centred = (x - a.sqrt() * mu) / (a * var + 1 - a)
    return (1 - a).sqrt() * centred, mu + a.sqrt() * var * centred


def gaussian_denoiser(
    diffusion: GaussianDiffusion,
    mu: float = MU,
    std: float = STD,
    prediction_type: PredictionType = "eps",
    var_value: float | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The optimal model of ``prediction_type`` for N(mu, std^2) data, as a ``model(x, t)``.

    ``var_value`` adds constant learned-variance channels. The model looks its noise level up by
    the ORIGINAL timestep it is fed, so a wrong timestep mapping shows in the samples.
    """
    abar_table = diffusion.alphas_cumprod

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps, x0 = _optimal(abar_table, x, t, mu, std**2)
        a = abar_table.to(x.dtype)[t].view(-1, *([1] * (x.ndim - 1)))
        out = {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[prediction_type]
        if var_value is None:
            return out
        return torch.cat([out, torch.full_like(out, var_value)], dim=1)

    return model


def exact_moments(
    abar_full: torch.Tensor, kept: list[int], method: str, variance: str = "fixedlarge"
) -> tuple[float, float]:
    """Mean and variance of the samples, propagated step by step in float64.

    DDPM (Ho et al. 2020, Eq. 7 and Algorithm 2): x' = c0 x0* + ct x + sd z, with the posterior
    coefficients of the chain on the kept steps. DDIM with eta = 0 (Song et al. 2021, Eq. 12):
    x' = sqrt(a') x0* + sqrt(1 - a') eps*.
    """
    var = STD**2
    mean_x, var_x = 0.0, 1.0
    for j in range(len(kept) - 1, -1, -1):
        a = float(abar_full[kept[j]])
        a_prev = float(abar_full[kept[j - 1]]) if j > 0 else 1.0
        gain = math.sqrt(a) * var / (a * var + 1 - a)  # x0* = MU + gain (x - sqrt(a) MU)
        x0_slope, x0_offset = gain, MU - gain * math.sqrt(a) * MU
        if method == "ddim":
            eps_slope = (1 - math.sqrt(a) * x0_slope) / math.sqrt(1 - a)
            eps_offset = -math.sqrt(a) * x0_offset / math.sqrt(1 - a)
            slope = math.sqrt(a_prev) * x0_slope + math.sqrt(1 - a_prev) * eps_slope
            offset = math.sqrt(a_prev) * x0_offset + math.sqrt(1 - a_prev) * eps_offset
            added = 0.0
        else:
            beta = 1 - a / a_prev
            c0 = math.sqrt(a_prev) * beta / (1 - a)
            ct = math.sqrt(1 - beta) * (1 - a_prev) / (1 - a)
            slope, offset = c0 * x0_slope + ct, c0 * x0_offset
            small = beta * (1 - a_prev) / (1 - a)
            added = 0.0 if j == 0 else (beta if variance == "fixedlarge" else small)
        mean_x, var_x = slope * mean_x + offset, slope**2 * var_x + added
    return mean_x, var_x


CASES = [
    # schedule, method, steps, prediction type, variance, eta, tolerance on Var vs the data
    ("linear", "ddpm", None, "eps", "fixedlarge", 0.0, 0.03),
    ("linear", "ddpm", 100, "v", "fixedlarge", 0.0, 0.06),
    ("cosine", "ddpm", 100, "x0", "fixedsmall", 0.0, 0.10),
    ("cosine", "ddim", 50, "eps", None, 0.0, 0.10),
    ("linear", "ddim", 50, "v", None, 0.0, 0.15),
]


@pytest.mark.parametrize(("schedule", "method", "steps", "kind", "variance", "eta", "tol"), CASES)
def test_samples_match_exact_moments_and_the_data(
    schedule: str,
    method: str,
    steps: int | None,
    kind: PredictionType,
    variance: str | None,
    eta: float,
    tol: float,
) -> None:
    diffusion = GaussianDiffusion.from_schedule(schedule, prediction_type=kind)
    model = gaussian_denoiser(diffusion, prediction_type=kind)
    x = sample(
        model,
        diffusion,
        (N, 1),
        steps=steps,
        method=method,  # type: ignore[arg-type]
        eta=eta,
        variance=variance,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(0),
    )
    assert x.shape == (N, 1)
    mean, var = x.double().mean().item(), x.double().var().item()
    kept = list(range(1000)) if steps is None else space_timesteps(1000, steps)
    exact_mean, exact_var = exact_moments(diffusion.alphas_cumprod, kept, method, variance or "")
    assert abs(mean - exact_mean) < 5 * math.sqrt(exact_var / N)
    assert abs(var / exact_var - 1) < 5 * math.sqrt(2 / N)
    assert abs(mean - MU) < 0.02
    assert abs(var / STD**2 - 1) < tol


def test_respaced_sampling_feeds_the_original_timesteps() -> None:
    diffusion = GaussianDiffusion.from_schedule("linear")
    inner = gaussian_denoiser(diffusion)
    seen: list[int] = []

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(int(t[0]))
        assert bool((t == t[0]).all())
        return inner(x, t)

    sample(model, diffusion, (4, 1), steps=25, generator=torch.Generator().manual_seed(0))
    assert seen == space_timesteps(1000, 25)[::-1]


@pytest.mark.parametrize(("value", "fixed"), [(1.0, "fixedlarge"), (-1.0, "fixedsmall")])
def test_learned_variance_extremes_equal_the_fixed_variances(value: float, fixed: str) -> None:
    # v = 1 gives log beta_t, v = 0 the clipped log beta-tilde_t (Nichol & Dhariwal Eq. 15): for
    # t > 0 these are the fixed variances, and no noise is added at t = 0.
    learned = GaussianDiffusion.from_schedule("cosine", learn_sigma=True)
    plain = GaussianDiffusion.from_schedule("cosine")
    x_learned = sample(
        gaussian_denoiser(learned, var_value=value),
        learned,
        (2000, 1),
        steps=40,
        generator=torch.Generator().manual_seed(5),
    )
    x_fixed = sample(
        gaussian_denoiser(plain),
        plain,
        (2000, 1),
        steps=40,
        variance=fixed,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(5),
    )
    torch.testing.assert_close(x_learned, x_fixed, rtol=1e-5, atol=1e-5)


def test_ddim_with_eta_one_is_ancestral_sampling_with_beta_tilde() -> None:
    diffusion = GaussianDiffusion.from_schedule("linear")
    model = gaussian_denoiser(diffusion)
    x_ddim = sample(
        model,
        diffusion,
        (2000, 1),
        steps=30,
        method="ddim",
        eta=1.0,
        generator=torch.Generator().manual_seed(9),
    )
    x_ddpm = sample(
        model,
        diffusion,
        (2000, 1),
        steps=30,
        variance="fixedsmall",
        generator=torch.Generator().manual_seed(9),
    )
    torch.testing.assert_close(x_ddim, x_ddpm, rtol=1e-4, atol=1e-4)


def test_clipping_keeps_samples_in_range() -> None:
    diffusion = GaussianDiffusion.from_schedule("linear")
    model = gaussian_denoiser(diffusion)
    clipped = sample(
        model, diffusion, (2000, 1), steps=20, clip_x0=True, generator=torch.Generator()
    )
    free = sample(model, diffusion, (2000, 1), steps=20, generator=torch.Generator())
    assert float(clipped.abs().max()) <= 1.0
    assert float(free.max()) > 1.0


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_same_seed_same_samples(method: str) -> None:
    diffusion = GaussianDiffusion.from_schedule("cosine")
    model = gaussian_denoiser(diffusion)

    def draw(seed: int) -> torch.Tensor:
        return sample(
            model,
            diffusion,
            (64, 2),
            steps=20,
            method=method,  # type: ignore[arg-type]
            eta=0.5,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))
    start = torch.randn(64, 2, generator=torch.Generator().manual_seed(4))
    from_noise = sample(model, diffusion, (64, 2), steps=20, method="ddim", noise=start)
    again = sample(model, diffusion, (64, 2), steps=20, method="ddim", noise=start.clone())
    assert torch.equal(from_noise, again)


def test_progress_bar_runs() -> None:
    diffusion = GaussianDiffusion.from_schedule("linear")
    x = sample(gaussian_denoiser(diffusion), diffusion, (3, 1), steps=5, progress=True)
    assert x.shape == (3, 1)


# Classifier-free guidance.


def test_guidance_combination_on_all_channels() -> None:
    calls: list[tuple[int, list[int]]] = []

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append((x.shape[0], y.tolist()))
        return x + y.float().view(-1, 1, 1, 1)

    x = torch.zeros(2, 4, 2, 2)
    guided = classifier_free_guidance(model, 3.0, null_label=10)
    out = guided(x, torch.tensor([5, 5]), torch.tensor([1, 2]))
    assert calls == [(4, [1, 2, 10, 10])]
    expected = torch.tensor([10 + 3 * (1 - 10), 10 + 3 * (2 - 10)], dtype=torch.float32)
    torch.testing.assert_close(out, expected.view(-1, 1, 1, 1).expand(2, 4, 2, 2))
    torch.testing.assert_close(
        guidance_combine(torch.tensor(2.0), torch.tensor(1.0), 0.0), torch.tensor(1.0)
    )


def test_guidance_keeps_the_conditional_variance_channels() -> None:
    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        label = y.float().view(-1, 1, 1, 1).expand(-1, x.shape[1], *x.shape[2:])
        return torch.cat([label, -label], dim=1)

    guided = classifier_free_guidance(model, 2.0, null_label=7, learn_sigma=True)
    out = guided(torch.zeros(3, 2, 1, 1), torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 2]))
    assert out.shape == (3, 4, 1, 1)
    labels = torch.tensor([0.0, 1.0, 2.0]).view(-1, 1, 1, 1)
    torch.testing.assert_close(out[:, :2], (7 + 2 * (labels - 7)).expand(3, 2, 1, 1))
    torch.testing.assert_close(out[:, 2:], (-labels).expand(3, 2, 1, 1))


def test_guidance_scale_one_runs_the_plain_batch() -> None:
    batches: list[int] = []

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        batches.append(x.shape[0])
        return x

    classifier_free_guidance(model, 1.0, null_label=3)(
        torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    )
    assert batches == [2]


def _two_class_model(
    diffusion: GaussianDiffusion, centre: float, std: float, null_label: int
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Optimal eps for classes N(-centre, std^2) (y=0), N(+centre, std^2) (y=1), and for their
    equal-weight mixture (y = null_label): the mixture's eps* is the class-posterior-weighted
    average of the class eps*, with p(y | x_t) from N(x_t; sqrt(a) mu_y, a std^2 + 1 - a)."""
    abar = diffusion.alphas_cumprod

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = abar.to(x.dtype)[t].view(-1, 1)
        eps_neg, _ = _optimal(abar, x, t, -centre, std**2)
        eps_pos, _ = _optimal(abar, x, t, centre, std**2)
        # log N(x; sqrt(a) c, v) - log N(x; -sqrt(a) c, v) = 2 sqrt(a) c x / v
        weight_pos = torch.sigmoid(2 * a.sqrt() * centre * x / (a * std**2 + 1 - a))
        mixture = weight_pos * eps_pos + (1 - weight_pos) * eps_neg
        cond = torch.where(y.view(-1, 1) == 1, eps_pos, eps_neg)
        return torch.where(y.view(-1, 1) == null_label, mixture, cond)

    return model


def test_guidance_on_a_two_class_mixture() -> None:
    diffusion = GaussianDiffusion.from_schedule("cosine")
    centre, std, n = 1.0, 0.5, 10_000
    base = _two_class_model(diffusion, centre, std, null_label=2)
    labels = torch.cat([torch.zeros(n // 2), torch.ones(n // 2)]).long()

    def draw(scale: float) -> torch.Tensor:
        guided = classifier_free_guidance(base, scale, null_label=2)
        return sample(
            guided,
            diffusion,
            (n, 1),
            steps=100,
            model_kwargs={"y": labels},
            generator=torch.Generator().manual_seed(3),
        ).flatten()

    conditional = draw(1.0)
    for half, sign in ((conditional[: n // 2], -1), (conditional[n // 2 :], 1)):
        assert abs(half.mean().item() - sign * centre) < 0.03
        assert abs(half.var().item() / std**2 - 1) < 0.1
    unconditional = draw(0.0)  # through the doubled batch: the null-label half only
    assert abs(unconditional.mean().item()) < 0.05
    assert abs(unconditional.var().item() / (centre**2 + std**2) - 1) < 0.05
    assert abs((unconditional > 0).float().mean().item() - 0.5) < 0.03
    strong = draw(3.0)  # guidance pushes each class away from the other
    assert strong[n // 2 :].mean().item() > conditional[n // 2 :].mean().item() + 0.05
    assert strong[: n // 2].mean().item() < conditional[: n // 2].mean().item() - 0.05
