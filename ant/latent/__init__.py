"""Latent diffusion: a VAE (diffusers' AutoencoderKL) to encode images and decode samples.

``ant data encode`` turns image shards into latent shards (:mod:`ant.latent.encode`); a recipe's
``vae`` section makes training encode images on the fly or read those latents, and sampling and
evaluation decode through the VAE (:mod:`ant.latent.recipe`). diffusers is imported only when a
VAE is loaded. See docs/latent.md.
"""

from ant.latent.recipe import image_reference, recipe_vae, training_encoder
from ant.latent.vae import DEFAULT_SCALE, Vae, VaeSpec

__all__ = ["DEFAULT_SCALE", "Vae", "VaeSpec", "image_reference", "recipe_vae", "training_encoder"]
