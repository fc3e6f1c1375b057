"""Sample grids written during training, from the EMA weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ant.recipe import Recipe
from ant.recipe.build import build_diffusion
from ant.recipe.latent import recipe_vae
from ant.sampling.arrays import save_array
from ant.sampling.generate import BatchSampler
from ant.sampling.images import IMAGE_CHANNELS, save_grid
from ant.sampling.model_info import ModelInfo
from ant.sampling.settings import resolve_settings


def write_sample_grid(ema: nn.Module, recipe: Recipe, path: Path, device: torch.device) -> Path:
    """Sample ``sample.num`` images with the recipe's sampler settings and save them as a grid.

    Class-conditional models cycle through the classes, so the grid shows each class in turn.
    A latent model's samples are decoded by the recipe's VAE; samples that are not images
    (latents without a VAE) are saved as a ``.npy`` array next to ``path``.
    """
    diffusion = build_diffusion(recipe)
    settings = resolve_settings(
        recipe.sample, timesteps=diffusion.num_timesteps, info=ModelInfo.of(ema)
    )
    draw = BatchSampler.from_settings(ema, diffusion, settings, device, recipe_vae(recipe, device))
    images = draw.sample_many(settings.num, seed=settings.seed, batch_size=settings.num)
    path.parent.mkdir(parents=True, exist_ok=True)
    if images.shape[1] not in IMAGE_CHANNELS:
        return save_array(images, path.with_suffix(".npy"))
    save_grid(images, path)
    return path
