"""Gaussian diffusion: noise schedules, the forward process, training losses and samplers.

The names below are imported from their modules on first access, so a torch-free module of
this package (:mod:`ant.diffusion.schedules`) can be used without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ant.core.registry import lazy_exports

if TYPE_CHECKING:
    from ant.diffusion.gaussian import PREDICTION_TYPES, PredictionType
    from ant.diffusion.gaussian_diffusion import (
        VARIANCE_TYPES,
        GaussianDiffusion,
        ModelFn,
        ModelPrediction,
        TrainingLosses,
        VarianceType,
    )
    from ant.diffusion.guidance import classifier_free_guidance, guidance_combine
    from ant.diffusion.respace import respaced_betas, space_timesteps
    from ant.diffusion.samplers import ddim_step, ddpm_step, sample
    from ant.diffusion.schedules import alphas_cumprod, get_betas, log_snr, snr

_EXPORTS = {
    "PREDICTION_TYPES": "gaussian",
    "PredictionType": "gaussian",
    "VARIANCE_TYPES": "gaussian_diffusion",
    "GaussianDiffusion": "gaussian_diffusion",
    "ModelFn": "gaussian_diffusion",
    "ModelPrediction": "gaussian_diffusion",
    "TrainingLosses": "gaussian_diffusion",
    "VarianceType": "gaussian_diffusion",
    "classifier_free_guidance": "guidance",
    "guidance_combine": "guidance",
    "respaced_betas": "respace",
    "space_timesteps": "respace",
    "ddim_step": "samplers",
    "ddpm_step": "samplers",
    "sample": "samplers",
    "alphas_cumprod": "schedules",
    "get_betas": "schedules",
    "log_snr": "schedules",
    "snr": "schedules",
}
__all__ = [
    "PREDICTION_TYPES",
    "VARIANCE_TYPES",
    "GaussianDiffusion",
    "ModelFn",
    "ModelPrediction",
    "PredictionType",
    "TrainingLosses",
    "VarianceType",
    "alphas_cumprod",
    "classifier_free_guidance",
    "ddim_step",
    "ddpm_step",
    "get_betas",
    "guidance_combine",
    "log_snr",
    "respaced_betas",
    "sample",
    "snr",
    "space_timesteps",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
