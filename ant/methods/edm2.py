"""Learned uncertainty weighting per noise level (Karras et al. 2024, "Analyzing and Improving
the Training Dynamics of Diffusion Models", CVPR: the loss with a learned uncertainty).

EDM2 learns a log-variance ``u(sigma)`` with a small network and trains on
``w(sigma) / exp(u(sigma)) * ||D(x; sigma) - x||^2 + u(sigma)``: Uncertainty Weighting (Kendall
et al. 2018) over a continuum of noise levels instead of k clusters. Here the per-sample loss is
the denoising MSE of whatever the model predicts and the base weight ``w`` is 1.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ant.diffusion.schedules import log_snr as log_snr_of
from ant.methods.base import TimestepWeighting

if TYPE_CHECKING:
    from ant.diffusion import GaussianDiffusion

FEATURE_SEED = 0
"""Seed of the fixed Fourier frequencies and phases, the same on every rank."""


def noise_conditioning(log_snr: torch.Tensor) -> torch.Tensor:
    """EDM's ``c_noise = log(sigma) / 4`` of a variance-preserving step with ``log_snr``.

    The variance-exploding noise level of x_t / alpha is ``sigma = sqrt(1 / SNR)`` (Karras et al.
    2022, Table 1), so ``c_noise = -log SNR / 8``; for the linear schedule with T = 1000 it spans
    about [-1.15, 1.27], the range EDM's Fourier features are made for.
    """
    return -log_snr / 8.0


def uncertainty_loss(mse: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """``exp(-u) * mse + u`` per sample (Karras et al. 2024, with base weight 1).

    For a fixed ``mse = m`` the minimum over ``u`` is at ``u = log m``, where the loss is
    ``1 + log m``: the learned weight ``exp(-u)`` tends to the inverse of the expected loss at
    each noise level.
    """
    return torch.exp(-log_var) * mse + log_var


class EDM2Uncertainty(TimestepWeighting):
    """EDM2's learned uncertainty ``u(t)`` per noise level (UW without clusters).

    ``u`` is a linear layer on ``channels`` random Fourier features ``sqrt(2) cos(2 pi (f c +
    p))`` of ``c_noise`` (f ~ N(0, 1), p ~ U(0, 1), fixed, as EDM2's magnitude-preserving Fourier
    embedding). Unlike EDM2's bias-free, weight-normalised layer the linear layer is a plain one
    with a bias, initialised to zero so that training starts from the unweighted loss. Its
    parameters form their own AdamW group with weight decay 0 and learning rate ``lr`` (None: the
    model's). ``c_noise`` is tabulated per timestep by :meth:`bind` as a non-persistent buffer.
    """

    c_noise: torch.Tensor
    frequencies: torch.Tensor
    phases: torch.Tensor

    def __init__(self, channels: int = 128, lr: float | None = None) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        if lr is not None and not lr > 0.0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.lr = lr
        generator = torch.Generator().manual_seed(FEATURE_SEED)
        self.register_buffer("frequencies", torch.randn(channels, generator=generator))
        self.register_buffer("phases", torch.rand(channels, generator=generator))
        self.register_buffer("c_noise", torch.zeros(0), persistent=False)
        self.linear = nn.Linear(channels, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self._last_log_var: torch.Tensor | None = None

    def bind(self, diffusion: GaussianDiffusion) -> None:
        table = noise_conditioning(log_snr_of(diffusion.alphas_cumprod))
        self.c_noise = table.to(device=self.c_noise.device, dtype=self.c_noise.dtype)

    def log_variance(self, t: torch.Tensor) -> torch.Tensor:
        """The learned ``u`` at timesteps ``t`` (shape ``[B]``)."""
        if self.c_noise.numel() == 0:
            raise RuntimeError("EDM2Uncertainty.bind(diffusion) must be called first")
        c = self.c_noise[t].unsqueeze(-1)
        features = math.sqrt(2.0) * torch.cos(2.0 * math.pi * (c * self.frequencies + self.phases))
        out: torch.Tensor = self.linear(features).squeeze(-1)
        return out

    def weigh(self, mse: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        log_var = self.log_variance(t)
        self._last_log_var = log_var.detach().mean()
        return uncertainty_loss(mse, log_var)

    def metrics(self) -> dict[str, torch.Tensor]:
        """The batch mean of ``u`` of the last weighted batch (as ``u_mean``)."""
        return {} if self._last_log_var is None else {"u_mean": self._last_log_var}

    def param_groups(self) -> list[dict[str, Any]]:
        group: dict[str, Any] = {"params": list(self.linear.parameters()), "weight_decay": 0.0}
        if self.lr is not None:
            group["lr"] = self.lr
        return [group]
