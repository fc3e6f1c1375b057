"""``ant export --to diffusers``: a trained DiT as a diffusers folder, loadable offline.

A latent run becomes a ``DiTPipeline`` folder (``model_index.json``, ``transformer/``,
``scheduler/``, ``vae/``): ``DiTPipeline.from_pretrained(OUT)``. A pixel-space run has no VAE,
which ``DiTPipeline`` requires, so it gets ``transformer/`` and ``scheduler/`` for
``DiTTransformer2DModel.from_pretrained(OUT, subfolder="transformer")`` and the scheduler's own
``from_pretrained``. ``ant_export.json`` records the source and what differs from ant.

The scheduler carries the run's diffusion exactly: its betas (``trained_betas``, whatever the
schedule), T, the prediction type and ``clip_sample`` from ``sample.clip_x0``; DDPM or DDIM after
``sample.sampler``. ``DiTPipeline`` drops a learned variance (it keeps the first
``in_channels`` output channels), so a learned-sigma run's DDPM scheduler uses
``fixed_small``; a fixed-variance run gets ``fixed_large``, ant's choice for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ant.core.atomic import atomic_write
from ant.core.errors import AntError
from ant.diffusion import GaussianDiffusion
from ant.models.diffusers_dit import (
    DIFFUSERS_SHIFT,
    diffusers_dit_config,
    dit_to_diffusers_state,
    timestep_frequency_fix,
)
from ant.models.dit import DiT
from ant.recipe import Recipe
from ant.recipe.latent import recipe_vae
from ant.sampling.loading import SamplingModel

PREDICTIONS = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
MANIFEST = "ant_export.json"


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError:
        raise AntError(
            "ant export --to diffusers needs diffusers: pip install 'ant-diffusion[latent]'"
        ) from None
    return diffusers


def scheduler_for(diffusion: GaussianDiffusion, recipe: Recipe) -> Any:
    """A diffusers scheduler with the run's betas, T, prediction type and clipping."""
    diffusers = _diffusers()
    common: dict[str, Any] = {
        "num_train_timesteps": diffusion.num_timesteps,
        "trained_betas": diffusion.betas.tolist(),
        "prediction_type": PREDICTIONS[recipe.diffusion.prediction],
        "clip_sample": recipe.sample.clip_x0,
    }
    if recipe.sample.sampler == "ddim":
        return diffusers.DDIMScheduler(**common)
    variance = "fixed_small" if recipe.diffusion.learn_sigma else "fixed_large"
    return diffusers.DDPMScheduler(**common, variance_type=variance)


def transformer_for(model: DiT) -> Any:
    """``model`` as a ``DiTTransformer2DModel`` (float32, eval mode), weights checked to load
    strictly and the positional table diffusers computes checked against ant's."""
    diffusers = _diffusers()
    transformer = diffusers.DiTTransformer2DModel(**diffusers_dit_config(model))
    transformer.load_state_dict(dit_to_diffusers_state(model.float()), strict=True)
    theirs = transformer.pos_embed.pos_embed
    if not torch.allclose(theirs, model.pos_embed.detach(), atol=1e-5):
        raise AntError(
            f"diffusers computes another positional table for sample_size {model.input_size} "
            "(its interpolation_scale is sample_size // 64) than DiT's: this model cannot be "
            "exported exactly"
        )
    return transformer.eval()


def export_diffusers(loaded: SamplingModel, out: Path, source: str, overwrite: bool) -> list[str]:
    """Write ``loaded`` to ``out`` for diffusers; returns the lines to show the user."""
    model, recipe = loaded.model, loaded.recipe
    if not isinstance(model, DiT):
        raise AntError(
            f"ant export --to diffusers: model '{recipe.model.name}' is not a DiT; the ADM U-Net "
            "has no exact diffusers counterpart in this ant (UNet2DModel names and orders its "
            "blocks otherwise and is not mapped), so it is not exported"
        )
    if model.routing is not None:
        raise AntError(
            "ant export --to diffusers: this DiT was trained with model.routing (DTR), which "
            "diffusers' DiTTransformer2DModel does not have, so its export would compute "
            "another function: it is not exported"
        )
    if out.exists() and not out.is_dir():
        raise AntError(f"{out} is a file: give a folder to export to")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise AntError(f"{out} is not empty: pass --overwrite, or another folder")
    vae = recipe_vae(recipe, "cpu")
    if vae is not None and vae.shift:
        raise AntError(
            f"the VAE {vae.name} has shift_factor {vae.shift:g}, which DiTPipeline does not "
            "apply when decoding: this run cannot be exported as a DiTPipeline"
        )
    transformer = transformer_for(model)
    scheduler = scheduler_for(loaded.diffusion, recipe)
    out.mkdir(parents=True, exist_ok=True)
    exact = model.t_embedder.shift == DIFFUSERS_SHIFT
    fix = timestep_frequency_fix(model.t_embedder.shift)
    if vae is not None:
        autoencoder: Any = vae.autoencoder.float()
        autoencoder.register_to_config(scaling_factor=vae.scale)
        pipeline = _diffusers().DiTPipeline(
            transformer=transformer, vae=autoencoder, scheduler=scheduler
        )
        pipeline.save_pretrained(out)
        load = f"DiTPipeline.from_pretrained({str(out)!r})"
    else:
        transformer.save_pretrained(out / "transformer")
        scheduler.save_pretrained(out / "scheduler")
        load = (
            f"DiTTransformer2DModel.from_pretrained({str(out)!r}, subfolder='transformer') "
            f"and {type(scheduler).__name__}.from_pretrained(..., subfolder='scheduler')"
        )
    manifest = {
        "source": source,
        "step": loaded.step,
        "weights": loaded.weights,
        "recipe": recipe.name,
        "model": recipe.model.name,
        "scheduler": type(scheduler).__name__,
        "vae": vae.name if vae is not None else None,
        "exact": exact,
        "timestep_frequency_fix": None if exact else fix,
    }
    with atomic_write(out / MANIFEST, text=True) as handle:
        handle.write(json.dumps(manifest, indent=2) + "\n")
    lines = [f"wrote {out}: {load}"]
    if not exact:
        lines.append(
            "note: diffusers' DiT embeds timesteps with other frequencies than this model was "
            f"trained with; after loading, run `{fix}` for outputs equal to ant's "
            "(or train with model.freq_shift=1 for an export that needs none)"
        )
    if model.num_classes != 1000 and vae is not None:
        lines.append(
            f"note: DiTPipeline's guidance uses class 1000 as the null label; this model has "
            f"{model.num_classes} classes, so call it with guidance_scale=1"
        )
    return lines
