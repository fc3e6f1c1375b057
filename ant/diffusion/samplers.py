"""Ancestral (DDPM) and DDIM sampling, with timestep respacing.

Both samplers are deterministic for a given ``torch.Generator``: the initial noise and every
step's noise come from it, in a fixed order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from rich.progress import track

from ant.diffusion._rng import standard_normal
from ant.diffusion.gaussian_diffusion import GaussianDiffusion, ModelFn, VarianceType

SamplerName = Literal["ddpm", "ddim"]


def ddpm_step(
    diffusion: GaussianDiffusion,
    model_output: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    *,
    variance: VarianceType | None = None,
    clip_x0: bool = False,
) -> torch.Tensor:
    """One ancestral step x_{t-1} ~ p(x_{t-1} | x_t) (Ho et al. 2020, Algorithm 2).

    x_{t-1} = mu + exp(log Sigma / 2) * noise, without noise where t = 0 (the last step returns
    the mean). ``variance`` and ``clip_x0`` as in :meth:`GaussianDiffusion.p_mean_variance`.
    """
    pred = diffusion.p_mean_variance(model_output, x_t, t, variance=variance, clip_x0=clip_x0)
    keep_noise = (t != 0).to(pred.mean.dtype).reshape(t.shape[0], *([1] * (x_t.ndim - 1)))
    return pred.mean + keep_noise * torch.exp(0.5 * pred.log_variance) * noise


def ddim_update(
    pred_x0: torch.Tensor,
    pred_eps: torch.Tensor,
    alpha_prev: torch.Tensor,
    sigma_prev: torch.Tensor,
    std: torch.Tensor,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """The DDIM update (Song et al. 2021, Eq. 12) in alpha / sigma notation.

    x_{t-1} = alpha_{t-1} x0-hat + sqrt(sigma_{t-1}^2 - std^2) eps-hat + std * noise, where
    alpha_{t-1} = sqrt(alpha-bar_{t-1}), sigma_{t-1} = sqrt(1 - alpha-bar_{t-1}) and std is the
    eta-scaled noise level of Eq. 16. ``noise`` may be ``None`` when std is 0.
    """
    direction = torch.sqrt((sigma_prev**2 - std**2).clamp(min=0.0)) * pred_eps
    x_prev = alpha_prev * pred_x0 + direction
    return x_prev if noise is None else x_prev + std * noise


def ddim_step(
    diffusion: GaussianDiffusion,
    model_output: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor | None,
    *,
    eta: float = 0.0,
    clip_x0: bool = False,
) -> torch.Tensor:
    """One DDIM step (Song et al. 2021, Eq. 12) with stochasticity ``eta``.

    The noise level is std = eta * sqrt((1 - a_{t-1}) / (1 - a_t)) * sqrt(1 - a_t / a_{t-1})
    with a = alpha-bar (their Eq. 16), which is eta * sqrt(beta-tilde_t) of the (respaced) chain:
    eta = 0 is deterministic, eta = 1 matches ancestral sampling with the fixedsmall variance.
    """
    pred_x0, pred_eps = diffusion.predict_x0_eps(model_output, x_t, t, clip_x0=clip_x0)
    std = eta * torch.sqrt(diffusion.coefficient("posterior_variance", t, x_t))
    return ddim_update(
        pred_x0,
        pred_eps,
        diffusion.coefficient("alpha_prev", t, x_t),
        diffusion.coefficient("sigma_prev", t, x_t),
        std,
        noise,
    )


def sample(
    model: ModelFn,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    *,
    steps: int | Sequence[int] | None = None,
    method: SamplerName = "ddpm",
    eta: float = 0.0,
    variance: VarianceType | None = None,
    clip_x0: bool = False,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    model_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Draw samples x_0 of ``shape`` by running the reverse process from pure noise.

    - ``steps``: respace to this many evenly spaced steps (or these steps), see
      :meth:`GaussianDiffusion.respaced`; ``None`` uses every step of ``diffusion``.
    - ``method``: ``ddpm`` (ancestral, with ``variance``, default the process's
      :attr:`~GaussianDiffusion.default_variance`) or ``ddim`` (with ``eta``).
    - ``clip_x0``: clamp each x0 prediction to [-1, 1] (for pixels; off for latents).
    - ``noise``: the starting x_T (its device and dtype win); otherwise drawn from ``generator``.
    - ``model`` is called as ``model(x_t, t, **model_kwargs)`` with the ORIGINAL timestep indices
      of the respaced steps; wrap it with :func:`classifier_free_guidance` for guidance.
    - ``progress``: show a progress bar.

    Runs without gradient tracking.
    """
    if method not in ("ddpm", "ddim"):
        raise ValueError(f"unknown sampler {method!r}; known: ddpm, ddim")
    process = diffusion if steps is None else diffusion.respaced(steps)
    if noise is None:
        x = standard_normal(tuple(shape), generator=generator, device=device, dtype=dtype)
    elif tuple(noise.shape) == tuple(shape):
        x = noise
    else:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
    kwargs = dict(model_kwargs or {})
    batch = x.shape[0]
    order = range(process.num_timesteps - 1, -1, -1)
    with torch.no_grad():
        for i in track(order, description="sampling", disable=not progress):
            t = torch.full((batch,), i, device=x.device, dtype=torch.long)
            output = model(x, process.model_timesteps(t), **kwargs)
            if method == "ddpm":
                noise_t = _draw_like(x, generator)
                x = ddpm_step(process, output, x, t, noise_t, variance=variance, clip_x0=clip_x0)
            else:
                maybe_noise = _draw_like(x, generator) if eta > 0 else None
                x = ddim_step(process, output, x, t, maybe_noise, eta=eta, clip_x0=clip_x0)
    return x


def _draw_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return standard_normal(x.shape, generator=generator, device=x.device, dtype=x.dtype)
