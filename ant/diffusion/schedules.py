"""Noise schedules: the betas of the forward process and the quantities derived from them.

Timesteps are 0-indexed: index ``t`` in ``0..T-1`` is step ``t + 1`` of the papers, whose steps
run from 1 to T. Every function works in float64 and returns float64 tensors on the CPU; the
diffusion process casts what it needs to the device and precision of its inputs.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

ScheduleName = Literal["linear", "cosine"]

SCHEDULE_ALIASES: dict[str, ScheduleName] = {
    "linear": "linear",
    "cosine": "cosine",
    "squaredcos_cap_v2": "cosine",
}


def linear_betas(
    num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Betas rising linearly from ``beta_start`` to ``beta_end`` (Ho et al. 2020, Sec. 4).

    The endpoints are given for T = 1000 and are multiplied by ``1000 / T`` for other T, so that
    the total noise added stays comparable (Nichol & Dhariwal 2021, Sec. 2.4; the rule of
    guided-diffusion's "linear" schedule). For T = 1000 the betas run exactly from 1e-4 to 0.02.
    """
    _check_num_timesteps(num_timesteps)
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64)


def cosine_alpha_bar(tau: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """The unnormalised cosine curve f(tau) = cos^2((tau + s) / (1 + s) * pi / 2).

    ``tau`` is continuous time in [0, 1]. Nichol & Dhariwal 2021, Eq. 17 define
    alpha-bar(t) = f(t / T) / f(0).
    """
    return torch.cos((tau + s) / (1.0 + s) * (math.pi / 2.0)) ** 2


def cosine_betas(
    num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999
) -> torch.Tensor:
    """Betas of the cosine schedule (Nichol & Dhariwal 2021, Eq. 17 and the text after it).

    ``beta_t = 1 - f((t + 1) / T) / f(t / T)`` for 0-indexed t, clipped to at most ``max_beta``
    to avoid the singularity at the end of the diffusion (diffusers' "squaredcos_cap_v2"). Where no
    clipping happened, ``alphas_cumprod(betas)[t] = f((t + 1) / T) / f(0)``.
    """
    _check_num_timesteps(num_timesteps)
    tau = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = cosine_alpha_bar(tau, s)
    return (1.0 - f[1:] / f[:-1]).clamp(max=max_beta)


def get_betas(name: str, num_timesteps: int = 1000) -> torch.Tensor:
    """The betas of a named schedule: ``linear``, or ``cosine`` (alias ``squaredcos_cap_v2``)."""
    schedule = SCHEDULE_ALIASES.get(name)
    if schedule == "linear":
        return linear_betas(num_timesteps)
    if schedule == "cosine":
        return cosine_betas(num_timesteps)
    known = ", ".join(sorted(SCHEDULE_ALIASES))
    raise ValueError(f"unknown noise schedule {name!r}; known: {known}")


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """alpha-bar_t = prod_{s <= t} (1 - beta_s) (Ho et al. 2020, notation before Eq. 4)."""
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


def snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha-bar / (1 - alpha-bar) (Kingma et al. 2021, Eq. 2 and 5)."""
    alpha_bar = alpha_bar.to(torch.float64)
    return alpha_bar / (1.0 - alpha_bar)


def log_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """log SNR = log(alpha-bar) - log(1 - alpha-bar), computed without forming the ratio."""
    alpha_bar = alpha_bar.to(torch.float64)
    return torch.log(alpha_bar) - torch.log1p(-alpha_bar)


def _check_num_timesteps(num_timesteps: int) -> None:
    if num_timesteps < 2:
        raise ValueError(f"a noise schedule needs at least 2 timesteps, got {num_timesteps}")
