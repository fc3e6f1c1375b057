"""Gaussian diffusion: noise schedules, the forward process, training losses and samplers."""

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
