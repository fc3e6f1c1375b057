"""Samples as pictures: uint8 conversion, one PNG grid, or one PNG per sample."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ant.core.atomic import atomic_write
from ant.core.errors import AntError
from ant.sampling.files import file_indices, sample_path

IMAGE_CHANNELS = (1, 3)
MIN_CELL = 32
"""Tiny samples are upscaled (nearest neighbour) until each grid cell is at least this wide."""
BORDER = 2
BORDER_VALUE = 128


def check_image_channels(channels: int) -> None:
    """Raise :class:`AntError` unless samples of ``channels`` channels can be saved as images."""
    if channels not in IMAGE_CHANNELS:
        raise AntError(
            f"samples have {channels} channels, images need 1 (grey) or 3 (RGB): these are "
            "latents; name their VAE in the recipe (vae.name_or_path, docs/latent.md), or use "
            "--npy to save raw arrays"
        )


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Samples ``[N, C, H, W]`` in [-1, 1] -> uint8 ``[N, H, W, C]`` on the CPU (clamp, round)."""
    if x.ndim != 4:
        raise ValueError(f"expected samples [N, C, H, W], got shape {tuple(x.shape)}")
    check_image_channels(x.shape[1])
    pixels = ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).cpu()


def upscale_factor(height: int, width: int) -> int:
    """The smallest integer zoom that makes a ``height`` x ``width`` image at least MIN_CELL."""
    return max(1, math.ceil(MIN_CELL / min(height, width)))


def save_grid(x: torch.Tensor, path: Path, nrow: int | None = None) -> Path:
    """Write samples ``[N, C, H, W]`` in [-1, 1] as one PNG grid with ``nrow`` images a row.

    ``nrow`` defaults to ceil(sqrt(N)). Small samples are upscaled by :func:`upscale_factor`;
    cells are separated and framed by a BORDER-pixel grey border.
    """
    images = to_uint8(x).numpy()
    count, height, width, channels = images.shape
    scale = upscale_factor(height, width)
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    cell_h, cell_w = height * scale, width * scale
    cols = min(nrow or math.ceil(math.sqrt(count)), count)
    rows = math.ceil(count / cols)
    grid = np.full(
        (rows * (cell_h + BORDER) + BORDER, cols * (cell_w + BORDER) + BORDER, channels),
        BORDER_VALUE,
        dtype=np.uint8,
    )
    for k, image in enumerate(images):
        top = BORDER + (k // cols) * (cell_h + BORDER)
        left = BORDER + (k % cols) * (cell_w + BORDER)
        grid[top : top + cell_h, left : left + cell_w] = image
    _write_png(grid, path)
    return path


def save_images(x: torch.Tensor, folder: Path, indices: int | Sequence[int] = 0) -> list[Path]:
    """Write each sample as ``FOLDER/sample-000123.png``; returns the paths.

    ``indices`` is the index of the first sample (the others follow consecutively) or the index
    of every sample. Each file is written atomically.
    """
    images = to_uint8(x).numpy()
    paths = [sample_path(folder, i, ".png") for i in file_indices(len(images), indices)]
    for image, path in zip(images, paths, strict=True):
        _write_png(image, path)
    return paths


def _write_png(image: np.ndarray, path: Path) -> None:
    """Write an ``[H, W, C]`` uint8 array (C = 1 grey, 3 RGB) as a PNG, atomically."""
    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    with atomic_write(path) as handle:
        picture.save(handle, format="PNG")
