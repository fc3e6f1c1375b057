"""A recipe's VAE: loading it once per process, checking it fits the model and the data.

Training, sample grids, ``ant sample``, ``ant eval`` and evaluations during training all get
the VAE from :func:`recipe_vae`, so it is loaded once per process and device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ant.core.errors import AntError
from ant.data.meta import DatasetMeta
from ant.data.shards import resolve_shards
from ant.data.vae import Vae, VaeSpec
from ant.recipe.schema import Recipe

logger = logging.getLogger(__name__)

_LOADED: dict[tuple[object, ...], Vae] = {}

Encoder = Callable[[torch.Tensor], torch.Tensor]


def vae_spec(recipe: Recipe) -> VaeSpec | None:
    """The recipe's VAE (``None`` for a pixel-space recipe)."""
    section = recipe.vae
    if section.name_or_path is None:
        return None
    return VaeSpec(
        name_or_path=section.name_or_path,
        subfolder=section.subfolder,
        scale=section.scale,
        precision=section.precision,
    )


def recipe_vae(recipe: Recipe, device: torch.device | str) -> Vae | None:
    """The recipe's VAE on ``device`` (loaded once per process), checked against the model.

    ``None`` for a pixel-space recipe. The model's ``in_channels`` must be the VAE's latent
    channels.
    """
    spec = vae_spec(recipe)
    if spec is None:
        return None
    key = (spec, str(torch.device(device)))
    if key not in _LOADED:
        _LOADED[key] = Vae.load(spec, device)
    vae = _LOADED[key]
    if recipe.model.in_channels != vae.latent_channels:
        raise AntError(
            f"model.in_channels is {recipe.model.in_channels} but the VAE {vae.name} makes "
            f"{vae.latent_channels}-channel latents: set model.in_channels={vae.latent_channels}"
        )
    return vae


def _shards_meta(spec: str) -> DatasetMeta | None:
    return resolve_shards(spec).meta


def check_data(recipe: Recipe, vae: Vae, meta: DatasetMeta | None) -> None:
    """The training data fit the VAE and the model (skipped when there is no meta.json)."""
    if meta is None:
        return
    shards, size = recipe.data.shards, recipe.model.input_size
    height, width, channels = meta.shape
    if recipe.vae.encode == "offline":
        if meta.format != "npy":
            raise AntError(
                f"data.shards {shards} hold images but vae.encode is offline: encode them with "
                f"'ant data encode {shards} OUT --vae {recipe.vae.name_or_path}' and train on OUT, "
                "or set vae.encode=online"
            )
        if channels != vae.latent_channels or (height, width) != (size, size):
            raise AntError(
                f"data.shards {shards} hold {channels}x{height}x{width} latents but the model "
                f"takes {recipe.model.in_channels}x{size}x{size}: set model.input_size={height} "
                f"(and in_channels={channels}), or encode the data with this VAE"
            )
        _check_encoded_by(recipe, vae, meta)
        if recipe.data.hflip:
            logger.warning(
                "data.hflip flips latents, which is not the latent of the flipped image: "
                "prefer 'ant data encode --flip' with data.hflip=false, or vae.encode=online"
            )
        return
    if meta.format != "png":
        raise AntError(
            f"data.shards {shards} hold latents (npy) but vae.encode is online (it encodes "
            "images): set vae.encode=offline, or point data.shards at image shards"
        )
    latent = vae.latent_shape((channels, height, width))
    if height % vae.factor or width % vae.factor or latent[1:] != (size, size):
        raise AntError(
            f"data.shards {shards} hold {height}x{width} images, which the VAE {vae.name} "
            f"(factor {vae.factor}) turns into {latent[1]}x{latent[2]} latents, but "
            f"model.input_size is {size}: set model.input_size={latent[1]} or re-pack the "
            f"images with --image-size {size * vae.factor}"
        )


def _check_encoded_by(recipe: Recipe, vae: Vae, meta: DatasetMeta) -> None:
    info = meta.latent
    if not info:
        return
    scale = info.get("scale")
    if isinstance(scale, int | float) and abs(float(scale) - vae.scale) > 1e-6 * vae.scale:
        raise AntError(
            f"the latents in {recipe.data.shards} were scaled by {scale:g} but the VAE scale is "
            f"{vae.scale:g}: set vae.scale={scale:g}, or encode the data again"
        )
    if info.get("vae") != vae.spec.name_or_path:
        logger.warning(
            "the latents in %s were encoded by the VAE %s, the recipe names %s: make sure they "
            "are the same VAE",
            recipe.data.shards,
            info.get("vae"),
            vae.spec.name_or_path,
        )


def training_encoder(recipe: Recipe, device: torch.device) -> Encoder | None:
    """Load the recipe's VAE (so it fails before training) and check the data against it.

    Returns the function that turns a batch of images into latents before every step when
    ``vae.encode`` is ``online`` (under no_grad, posterior noise from the global RNG, which
    checkpoints restore), else ``None``.
    """
    vae = recipe_vae(recipe, device)
    if vae is None:
        return None
    check_data(recipe, vae, _shards_meta(recipe.data.shards or ""))
    if recipe.vae.encode == "offline":
        return None
    posterior = recipe.vae.posterior

    def encode(images: torch.Tensor) -> torch.Tensor:
        return vae.encode(images, posterior=posterior)

    return encode


def image_reference(recipe: Recipe) -> str | None:
    """The image shards behind a latent recipe's training data, for evaluation references.

    ``data.shards`` itself for online encoding; for offline encoding the source recorded in the
    latent shards' meta.json, if it still exists; ``None`` when unknown.
    """
    shards = recipe.data.shards
    if shards is None or recipe.vae.name_or_path is None or recipe.vae.encode == "online":
        return shards
    try:
        meta = _shards_meta(shards)
    except AntError:
        return shards
    source = (meta.latent or {}).get("source_shards") if meta is not None else None
    if isinstance(source, str) and (Path(source).expanduser().exists() or "://" in source):
        return source
    return shards
