"""The Gaussian diffusion process: a schedule, a prediction type and optional learned variance.

:class:`GaussianDiffusion` holds its per-timestep tables in float64 on the CPU and casts them once
per (device, precision) it meets; indexing them with a ``[B]`` tensor of timesteps is a gather on
the timesteps' device, with no host synchronisation. The math lives in the pure functions of
:mod:`ant.diffusion.gaussian` and :mod:`ant.diffusion.losses`; this class gathers coefficients and
composes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ant.diffusion import gaussian
from ant.diffusion._rng import standard_normal
from ant.diffusion.gaussian import PREDICTION_TYPES, PredictionType
from ant.diffusion.losses import mse_per_sample, vlb_bits_per_sample
from ant.diffusion.respace import check_timesteps, space_timesteps
from ant.diffusion.schedules import alphas_cumprod, get_betas, log_snr, snr

VarianceType = Literal["learned", "fixedlarge", "fixedsmall"]
VARIANCE_TYPES: tuple[VarianceType, ...] = ("learned", "fixedlarge", "fixedsmall")

TableName = Literal[
    "alphas_cumprod",
    "alpha",
    "sigma",
    "alpha_prev",
    "sigma_prev",
    "posterior_coef_x0",
    "posterior_coef_xt",
    "posterior_variance",
    "posterior_log_variance",
    "log_betas",
    "fixedlarge_log_variance",
    "snr",
    "log_snr",
]

ModelFn = Callable[..., torch.Tensor]
"""A denoiser called as ``model(x_t, t, **model_kwargs)`` with the original timestep indices."""


@dataclass(frozen=True)
class ModelPrediction:
    """The reverse step p(x_{t-1} | x_t) a model output defines, and what it predicts.

    ``log_variance`` broadcasts against x_t (shape ``[B, 1, ...]`` for a fixed variance).
    """

    mean: torch.Tensor
    log_variance: torch.Tensor
    pred_x0: torch.Tensor
    pred_eps: torch.Tensor


@dataclass(frozen=True)
class TrainingLosses:
    """Per-sample training losses, each of shape ``[B]`` (never averaged over the batch).

    ``loss`` is what to optimise: ``mse`` alone, or ``mse + vb`` (the hybrid loss) with a learned
    variance. ``vb`` is the variational-bound term in bits per dimension, ``None`` without a
    learned variance.
    """

    loss: torch.Tensor
    mse: torch.Tensor
    vb: torch.Tensor | None


class GaussianDiffusion:
    """A discrete-time Gaussian diffusion (Ho et al. 2020) with T = ``len(alphas_cumprod)`` steps.

    The process is defined by alpha-bar_t (its betas follow as 1 - alpha-bar_t / alpha-bar_{t-1});
    build it with :meth:`from_schedule` or :meth:`from_betas`. Timesteps are 0-indexed (``t`` in
    ``0..T-1``; t = 0 is the least noisy step). Options:

    - ``prediction_type``: what the model's (first C) output channels predict, ``eps`` (Ho et al.
      2020), ``x0`` or ``v`` (Salimans & Ho 2022).
    - ``learn_sigma``: the model outputs 2C channels; the second half interpolates the log
      variance between log beta-tilde_t and log beta_t (Nichol & Dhariwal 2021, Eq. 15) and is
      trained by the variational-bound term of the hybrid loss.
    - ``timestep_map``: for a respaced process (see :meth:`respaced`), the original timestep index
      of each step, which is what the model is fed.
    """

    def __init__(
        self,
        alphas_cumprod: torch.Tensor | Sequence[float],
        *,
        prediction_type: PredictionType = "eps",
        learn_sigma: bool = False,
        timestep_map: torch.Tensor | Sequence[int] | None = None,
    ) -> None:
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu()
        if abar.ndim != 1 or abar.shape[0] < 2:
            raise ValueError(
                f"alphas_cumprod must be 1-D with at least 2 entries, got {tuple(abar.shape)}"
            )
        betas = gaussian.betas_from_alphas_cumprod(abar)
        if not bool(((betas > 0) & (betas < 1) & (abar > 0)).all()):
            raise ValueError("betas must lie strictly between 0 and 1")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction type {prediction_type!r}; known: {PREDICTION_TYPES}"
            )
        self.alphas_cumprod = abar
        self.betas = betas
        self.num_timesteps = int(abar.shape[0])
        self.prediction_type: PredictionType = prediction_type
        self.learn_sigma = learn_sigma
        if timestep_map is None:
            self.timestep_map = torch.arange(self.num_timesteps)
        else:
            self.timestep_map = torch.as_tensor(timestep_map, dtype=torch.long).cpu()
            if self.timestep_map.shape != (self.num_timesteps,):
                raise ValueError("timestep_map needs one original index per timestep")
        self._tables = self._build_tables()
        self._device_cache: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}
        self._map_cache: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def from_betas(
        cls,
        betas: torch.Tensor | Sequence[float],
        *,
        prediction_type: PredictionType = "eps",
        learn_sigma: bool = False,
    ) -> GaussianDiffusion:
        """A process with the given betas (each strictly between 0 and 1)."""
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must lie strictly between 0 and 1")
        return cls(alphas_cumprod(betas), prediction_type=prediction_type, learn_sigma=learn_sigma)

    @classmethod
    def from_schedule(
        cls,
        schedule: str = "linear",
        num_timesteps: int = 1000,
        *,
        prediction_type: PredictionType = "eps",
        learn_sigma: bool = False,
    ) -> GaussianDiffusion:
        """A process on a named schedule (``linear``, ``cosine``; see :func:`get_betas`)."""
        return cls.from_betas(
            get_betas(schedule, num_timesteps),
            prediction_type=prediction_type,
            learn_sigma=learn_sigma,
        )

    def respaced(self, timesteps: int | Sequence[int]) -> GaussianDiffusion:
        """The process restricted to a subset of its timesteps (Nichol & Dhariwal 2021, Sec. 4).

        ``timesteps`` is a count S (S evenly spaced steps, see :func:`space_timesteps`) or the
        increasing list of steps to keep. The new process has S steps whose alpha-bar is exactly
        this one's at the kept steps (so its betas are :func:`respaced_betas`); its
        ``timestep_map`` gives the original index of each step, so respacing a respaced process
        still feeds the model the indices it was trained on. Keeping every step returns ``self``.
        """
        if isinstance(timesteps, int):
            kept = space_timesteps(self.num_timesteps, timesteps)
        else:
            kept = check_timesteps(timesteps, self.num_timesteps)
        if len(kept) == self.num_timesteps:
            return self
        index = torch.tensor(kept)
        return GaussianDiffusion(
            self.alphas_cumprod[index],
            prediction_type=self.prediction_type,
            learn_sigma=self.learn_sigma,
            timestep_map=self.timestep_map[index],
        )

    @property
    def default_variance(self) -> VarianceType:
        """``learned`` with ``learn_sigma``, else ``fixedlarge`` (sigma^2 = beta, as DDPM/ADM)."""
        return "learned" if self.learn_sigma else "fixedlarge"

    def _build_tables(self) -> dict[str, torch.Tensor]:
        betas, abar = self.betas, self.alphas_cumprod
        abar_prev = gaussian.previous_alphas_cumprod(abar)
        coef_x0, coef_xt, post_var = gaussian.posterior_coefficients(abar)
        return {
            "alphas_cumprod": abar,
            "alpha": torch.sqrt(abar),
            "sigma": torch.sqrt(1.0 - abar),
            "alpha_prev": torch.sqrt(abar_prev),
            "sigma_prev": torch.sqrt(1.0 - abar_prev),
            "posterior_coef_x0": coef_x0,
            "posterior_coef_xt": coef_xt,
            "posterior_variance": post_var,
            "posterior_log_variance": gaussian.clipped_log_variance(post_var),
            "log_betas": torch.log(betas),
            # sigma^2 = beta_t (Ho et al. 2020, Sec. 3.2), except at t = 0 where beta-tilde_1
            # gives a better decoder likelihood (the choice of the DDPM and ADM releases).
            "fixedlarge_log_variance": torch.log(torch.cat([post_var[1:2], betas[1:]])),
            "snr": snr(abar),
            "log_snr": log_snr(abar),
        }

    def coefficient(self, name: TableName, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at timesteps ``t`` (shape ``[B]``), shaped ``[B, 1, ...]`` like ``like``.

        The values are float64 if ``like`` is float64, else float32, on ``t``'s device (keep
        ``t`` on the data's device). The table is cast once per (device, precision) and cached.
        """
        if t.ndim != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(
                f"timesteps must have shape [{like.shape[0]}] to match the batch, "
                f"got {tuple(t.shape)}"
            )
        dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
        key = (t.device, dtype)
        tables = self._device_cache.get(key)
        if tables is None:
            tables = {k: v.to(device=t.device, dtype=dtype) for k, v in self._tables.items()}
            self._device_cache[key] = tables
        return tables[name][t].reshape(t.shape[0], *([1] * (like.ndim - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The original timestep indices to feed the model for this process's steps ``t``."""
        table = self._map_cache.get(t.device)
        if table is None:
            table = self.timestep_map.to(t.device)
            self._map_cache[t.device] = table
        return table[t]

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """SNR(t) = alpha-bar_t / (1 - alpha-bar_t) at timesteps ``t``, shape ``[B]``, float32."""
        return self.coefficient("snr", t, t)

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """log SNR(t) at timesteps ``t``, shape ``[B]``, float32."""
        return self.coefficient("log_snr", t, t)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) noise (Ho et al. 2020, Eq. 4)."""
        alpha, sigma = self.coefficient("alpha", t, x0), self.coefficient("sigma", t, x0)
        return gaussian.q_sample(x0, noise, alpha, sigma)

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x0) (Ho et al. Eq. 6-7).

        The variance terms have shape ``[B, 1, ...]``; the log variance at t = 0 is that of t = 1
        (the variance itself is 0 there).
        """
        mean = gaussian.posterior_mean(
            x0,
            x_t,
            self.coefficient("posterior_coef_x0", t, x_t),
            self.coefficient("posterior_coef_xt", t, x_t),
        )
        variance = self.coefficient("posterior_variance", t, x_t)
        return mean, variance, self.coefficient("posterior_log_variance", t, x_t)

    def convert(
        self,
        value: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        source: PredictionType,
        target: PredictionType,
    ) -> torch.Tensor:
        """A prediction of kind ``source`` at (x_t, t) as one of kind ``target`` (eps, x0, v)."""
        alpha, sigma = self.coefficient("alpha", t, x_t), self.coefficient("sigma", t, x_t)
        return gaussian.convert_prediction(value, x_t, alpha, sigma, source, target)

    def training_target(
        self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """The regression target of the prediction type for x_t = q_sample(x0, t, noise)."""
        alpha, sigma = self.coefficient("alpha", t, x0), self.coefficient("sigma", t, x0)
        return gaussian.training_target(x0, noise, alpha, sigma, self.prediction_type)

    def split_output(
        self, model_output: torch.Tensor, x_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prediction channels and (with ``learn_sigma``) the variance channels of an output."""
        channels = x_t.shape[1]
        expected = 2 * channels if self.learn_sigma else channels
        if model_output.shape[0] != x_t.shape[0] or model_output.shape[1] != expected:
            raise ValueError(
                f"model output of shape {tuple(model_output.shape)} does not match x_t of shape "
                f"{tuple(x_t.shape)} (expected {expected} channels, learn_sigma={self.learn_sigma})"
            )
        if not self.learn_sigma:
            return model_output, None
        prediction, var_values = model_output.split(channels, dim=1)
        return prediction, var_values

    def predict_x0_eps(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        *,
        clip_x0: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The x0 and eps a model output implies at (x_t, t).

        With ``clip_x0`` the x0 prediction is clamped to [-1, 1] (for pixel data; leave it off for
        latents) and eps is recomputed from the clamped x0 so the two stay consistent.
        """
        prediction, _ = self.split_output(model_output, x_t)
        pred_x0 = self.convert(prediction, x_t, t, self.prediction_type, "x0")
        if clip_x0:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
            return pred_x0, self.convert(pred_x0, x_t, t, "x0", "eps")
        return pred_x0, self.convert(prediction, x_t, t, self.prediction_type, "eps")

    def p_mean_variance(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        *,
        variance: VarianceType | None = None,
        clip_x0: bool = False,
    ) -> ModelPrediction:
        """The model's reverse step p(x_{t-1} | x_t) = N(mu-tilde_t(x_t, x0-hat), Sigma_t).

        The mean is the posterior mean at the predicted x0 (Ho et al. 2020, Eq. 7 and 11). The
        variance is ``variance`` (default :attr:`default_variance`): ``learned`` (Nichol &
        Dhariwal 2021, Eq. 15), ``fixedsmall`` (beta-tilde_t) or ``fixedlarge`` (beta_t; Ho et
        al. 2020, Sec. 3.2).
        """
        variance = variance or self.default_variance
        _, var_values = self.split_output(model_output, x_t)
        if variance == "learned":
            if var_values is None:
                raise ValueError("a learned variance needs a process with learn_sigma=True")
            log_variance = gaussian.learned_log_variance(
                var_values,
                self.coefficient("posterior_log_variance", t, x_t),
                self.coefficient("log_betas", t, x_t),
            )
        elif variance == "fixedsmall":
            log_variance = self.coefficient("posterior_log_variance", t, x_t)
        elif variance == "fixedlarge":
            log_variance = self.coefficient("fixedlarge_log_variance", t, x_t)
        else:
            raise ValueError(f"unknown variance type {variance!r}; known: {VARIANCE_TYPES}")
        pred_x0, pred_eps = self.predict_x0_eps(model_output, x_t, t, clip_x0=clip_x0)
        mean, _, _ = self.q_posterior(pred_x0, x_t, t)
        return ModelPrediction(mean, log_variance, pred_x0, pred_eps)

    def training_losses(
        self,
        model_output: torch.Tensor,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
    ) -> TrainingLosses:
        """Per-sample losses of ``model_output = model(x_t, t)`` for x_t = q_sample(x0, t, noise).

        ``mse``: the mean over C, H, W of the squared error to :meth:`training_target` (Ho et al.
        2020, Eq. 14 for eps). With ``learn_sigma`` the loss is the hybrid ``mse + vb`` (Nichol &
        Dhariwal 2021, Sec. 3.1), where ``vb`` is the bound term L_t in bits per dimension
        computed with the mean channels detached, so it trains only the variance channels. As in
        DiT (loss type MSE), ``vb`` is not rescaled by T / 1000 (ADM's RESCALED_MSE does that) and
        ``mse`` is a mean, not a sum, over dimensions.
        """
        prediction, var_values = self.split_output(model_output, x_t)
        mse = mse_per_sample(prediction, self.training_target(x0, noise, t))
        if var_values is None:
            return TrainingLosses(loss=mse, mse=mse, vb=None)
        frozen = torch.cat([prediction.detach(), var_values], dim=1)
        model = self.p_mean_variance(frozen, x_t, t, variance="learned")
        true_mean, _, true_log_variance = self.q_posterior(x0, x_t, t)
        vb = vlb_bits_per_sample(
            x0, true_mean, true_log_variance, model.mean, model.log_variance, t == 0
        )
        return TrainingLosses(loss=mse + vb, mse=mse, vb=vb)

    def model_losses(
        self,
        model: ModelFn,
        x0: torch.Tensor,
        t: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> TrainingLosses:
        """Noise ``x0`` to step ``t``, call ``model(x_t, t_orig, **model_kwargs)``, return losses.

        ``t_orig`` is :meth:`model_timesteps` of ``t`` (equal to ``t`` unless respaced). Without
        ``noise``, N(0, I) noise is drawn (from ``generator`` if given).
        """
        if noise is None:
            noise = standard_normal(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.q_sample(x0, t, noise)
        output = model(x_t, self.model_timesteps(t), **(model_kwargs or {}))
        return self.training_losses(output, x0, x_t, t, noise)
