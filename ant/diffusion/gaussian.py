"""Closed forms of the Gaussian forward process, its posterior and the prediction targets.

Notation (Salimans & Ho 2022, Sec. 2): ``x_t = alpha_t * x_0 + sigma_t * eps`` with
``alpha_t = sqrt(alpha-bar_t)`` and ``sigma_t = sqrt(1 - alpha-bar_t)``, so alpha^2 + sigma^2 = 1.
The functions take these coefficients as tensors that broadcast against the data (the diffusion
process gathers them per timestep), so they hold for any schedule and any timestep layout.
"""

from __future__ import annotations

from typing import Literal

import torch

PredictionType = Literal["eps", "v", "x0"]
PREDICTION_TYPES: tuple[PredictionType, ...] = ("eps", "v", "x0")


def q_sample(
    x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) (Ho et al. 2020, Eq. 4)."""
    return alpha * x0 + sigma * noise


def x0_from_eps(
    x_t: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """x_0 = (x_t - sigma_t eps) / alpha_t: Eq. 4 of Ho et al. 2020 solved for x_0 (cf. Eq. 15)."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(
    x_t: torch.Tensor, x0: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """eps = (x_t - alpha_t x_0) / sigma_t, Eq. 4 of Ho et al. 2020 solved for eps."""
    return (x_t - alpha * x0) / sigma


def v_from_x0_eps(
    x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """The velocity v = alpha_t eps - sigma_t x_0 (Salimans & Ho 2022, Sec. 4 and App. D)."""
    return alpha * eps - sigma * x0


def x0_from_v(
    x_t: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """x_0 = alpha_t x_t - sigma_t v (Salimans & Ho 2022, App. D; uses alpha^2 + sigma^2 = 1)."""
    return alpha * x_t - sigma * v


def eps_from_v(
    x_t: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """eps = sigma_t x_t + alpha_t v (Salimans & Ho 2022, App. D; uses alpha^2 + sigma^2 = 1)."""
    return sigma * x_t + alpha * v


def convert_prediction(
    value: torch.Tensor,
    x_t: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    source: PredictionType,
    target: PredictionType,
) -> torch.Tensor:
    """Express a prediction of kind ``source`` (eps, v or x0) at x_t as one of kind ``target``.

    Each conversion uses the direct closed form above, never a detour through a division that a
    direct form avoids (v to eps, for example, needs no division at all).
    """
    for kind in (source, target):
        if kind not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction type {kind!r}; known: {PREDICTION_TYPES}")
    if source == target:
        return value
    if source == "eps":
        x0 = x0_from_eps(x_t, value, alpha, sigma)
        return x0 if target == "x0" else v_from_x0_eps(x0, value, alpha, sigma)
    if source == "x0":
        eps = eps_from_x0(x_t, value, alpha, sigma)
        return eps if target == "eps" else v_from_x0_eps(value, eps, alpha, sigma)
    if target == "x0":
        return x0_from_v(x_t, value, alpha, sigma)
    return eps_from_v(x_t, value, alpha, sigma)


def training_target(
    x0: torch.Tensor,
    noise: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    prediction_type: PredictionType,
) -> torch.Tensor:
    """What a model of the given prediction type regresses onto for x_t = alpha x0 + sigma noise.

    eps: the noise (Ho et al. 2020, Eq. 14); x0: the clean data; v: alpha eps - sigma x0
    (Salimans & Ho 2022, Sec. 4).
    """
    if prediction_type == "eps":
        return noise
    if prediction_type == "x0":
        return x0
    if prediction_type == "v":
        return v_from_x0_eps(x0, noise, alpha, sigma)
    raise ValueError(f"unknown prediction type {prediction_type!r}; known: {PREDICTION_TYPES}")


def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """beta_t = 1 - alpha-bar_t / alpha-bar_{t-1} (Ho et al. 2020, definitions before Eq. 4)."""
    return 1.0 - alphas_cumprod / previous_alphas_cumprod(alphas_cumprod)


def posterior_coefficients(
    alphas_cumprod: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-timestep terms of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, Eq. 6 and 7).

    Returns ``(coef_x0, coef_xt, variance)`` with mean = coef_x0 * x_0 + coef_xt * x_t:
    coef_x0 = beta_t sqrt(alpha-bar_{t-1}) / (1 - alpha-bar_t),
    coef_xt = sqrt(alpha_t) (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t),
    variance = beta-tilde_t = beta_t (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t),
    with alpha_t = 1 - beta_t = alpha-bar_t / alpha-bar_{t-1} and alpha-bar_{-1} = 1, so the
    variance is 0 at t = 0. Everything is computed from alpha-bar, which stays exact when a
    respaced chain has betas close to 1.
    """
    prev = previous_alphas_cumprod(alphas_cumprod)
    alpha_step = alphas_cumprod / prev
    betas = 1.0 - alpha_step
    one_minus = 1.0 - alphas_cumprod
    coef_x0 = betas * torch.sqrt(prev) / one_minus
    coef_xt = torch.sqrt(alpha_step) * (1.0 - prev) / one_minus
    variance = betas * (1.0 - prev) / one_minus
    return coef_x0, coef_xt, variance


def previous_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """alpha-bar_{t-1} for every t, with alpha-bar_{-1} = 1 (no noise before the first step)."""
    return torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])


def clipped_log_variance(variance: torch.Tensor) -> torch.Tensor:
    """log of a per-timestep variance whose entry at t = 0 is replaced by the one at t = 1.

    The posterior variance is 0 at t = 0, so its log would be -inf there. The clipped log is the
    lower end of the learned-variance interpolation (Nichol & Dhariwal 2021, Eq. 15) and the
    fixedsmall log variance; the clipping follows the improved-DDPM release.
    """
    return torch.log(torch.cat([variance[1:2], variance[1:]]))


def posterior_mean(
    x0: torch.Tensor, x_t: torch.Tensor, coef_x0: torch.Tensor, coef_xt: torch.Tensor
) -> torch.Tensor:
    """mu-tilde_t(x_t, x_0) = coef_x0 x_0 + coef_xt x_t (Ho et al. 2020, Eq. 7)."""
    return coef_x0 * x0 + coef_xt * x_t


def learned_log_variance(
    model_var: torch.Tensor, min_log: torch.Tensor, max_log: torch.Tensor
) -> torch.Tensor:
    """log Sigma = v log beta_t + (1 - v) log beta-tilde_t (Nichol & Dhariwal 2021, Eq. 15).

    ``model_var`` is the raw model output in [-1, 1], mapped to the fraction v = (out + 1) / 2;
    ``min_log`` is the clipped log beta-tilde_t and ``max_log`` is log beta_t.
    """
    frac = (model_var + 1.0) / 2.0
    return frac * max_log + (1.0 - frac) * min_log
