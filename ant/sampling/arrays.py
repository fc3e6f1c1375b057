"""Samples as raw float32 ``.npy`` arrays, for latents or further processing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ant.core.atomic import atomic_write
from ant.sampling.files import file_indices, sample_path


def save_array(x: torch.Tensor, path: Path) -> Path:
    """Write ``x`` (e.g. samples ``[N, C, H, W]``) as one float32 ``.npy`` file, atomically."""
    with atomic_write(path) as handle:
        np.save(handle, x.detach().float().cpu().numpy())
    return path


def save_arrays(x: torch.Tensor, folder: Path, indices: int | Sequence[int] = 0) -> list[Path]:
    """Write each sample ``[C, H, W]`` as ``FOLDER/sample-000123.npy``; returns the paths.

    ``indices`` as in :func:`ant.sampling.images.save_images`.
    """
    paths = [sample_path(folder, i, ".npy") for i in file_indices(len(x), indices)]
    for sample, path in zip(x, paths, strict=True):
        save_array(sample, path)
    return paths
