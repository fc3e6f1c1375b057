"""Per-sample loss terms: the simple MSE and the variational bound in bits per dimension.

Every loss here keeps the batch dimension: a tensor of shape ``[B]`` comes back, so that a caller
can weight or group samples (per timestep cluster, for instance) before averaging.
"""

from __future__ import annotations

import math

import torch

LOG2 = math.log(2.0)
SQRT_HALF = math.sqrt(0.5)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first (the batch): ``[B, ...] -> [B]``."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def mse_per_sample(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The simple loss ||target - prediction||^2 averaged over C, H, W (Ho et al. 2020, Eq. 14)."""
    return mean_flat((target - prediction) ** 2)


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats.

    KL = 0.5 * (logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2) - 1),
    the closed form used for the terms L_{t-1} of the bound (Ho et al. 2020, Eq. 5).
    """
    return 0.5 * (
        logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
        - 1.0
    )


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, num_bins: int = 256
) -> torch.Tensor:
    """Elementwise log-probability of the bin holding x under N(mean, exp(log_scale)^2), in nats.

    The decoder L_0 of Ho et al. 2020, Eq. 13: data in [-1, 1] are ``num_bins`` integer levels;
    each level owns the interval of half-width 1 / (num_bins - 1) around it, and the two extreme
    levels extend to -inf and +inf, so the probabilities of all bins sum to 1. The log-CDF of the
    open-ended bins and a tail-aware difference of CDFs for the inner bins keep the result accurate
    far from the mean; inner-bin probabilities are floored at 1e-12.
    """
    half_bin = 1.0 / (num_bins - 1)
    inv_scale = torch.exp(-log_scale)
    centred = x - mean
    upper = inv_scale * (centred + half_bin)
    lower = inv_scale * (centred - half_bin)
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)
    right_tail = centred > 0
    inner = torch.where(
        right_tail,
        _normal_cdf(-lower) - _normal_cdf(-upper),
        _normal_cdf(upper) - _normal_cdf(lower),
    )
    log_inner = torch.log(inner.clamp(min=1e-12))
    edge = 1.0 - half_bin
    return torch.where(x < -edge, log_cdf_upper, torch.where(x > edge, log_sf_lower, log_inner))


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF through erfc, accurate in the left tail also in float32."""
    return 0.5 * torch.erfc(-x * SQRT_HALF)


def vlb_bits_per_sample(
    x0: torch.Tensor,
    true_mean: torch.Tensor,
    true_log_variance: torch.Tensor,
    model_mean: torch.Tensor,
    model_log_variance: torch.Tensor,
    is_first_step: torch.Tensor,
) -> torch.Tensor:
    """One term of the variational bound per sample, in bits per dimension.

    For t > 0: L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)); for t = 0 (where
    ``is_first_step``, shape ``[B]``, is true): L_0 = -log p(x_0 | x_1) under the discretized
    Gaussian decoder (Ho et al. 2020, Eq. 5 and 13; Nichol & Dhariwal 2021, Sec. 3.1). Both are
    averaged over the non-batch dimensions and divided by log 2.
    """
    kl = mean_flat(normal_kl(true_mean, true_log_variance, model_mean, model_log_variance))
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_variance))
    return torch.where(is_first_step, nll, kl) / LOG2
