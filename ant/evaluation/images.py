"""Image sets for evaluation, read in uint8 batches: shards, image folders, ``.npz`` arrays, PNGs.

Every reader yields CPU tensors ``[B, C, H, W]`` of dtype uint8 (what torch-fidelity's feature
extractors take), in a fixed order, so features and statistics do not depend on the batch size.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ant.core.errors import AntError
from ant.data.loader import make_loader
from ant.data.shards import resolve_shards
from ant.data.sources import FolderSource

GREY_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R 601 luma, PIL's ``convert("L")``: RGB images for a one-channel feature extractor."""


@dataclass(frozen=True)
class ImageSet:
    """A finite, ordered set of images; ``batches(size)`` reads it from the start."""

    description: str
    count: int | None
    batches: Callable[[int], Iterator[torch.Tensor]]


def float_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 ``[B, C, H, W]`` (clamp, round), as ``ant sample`` saves them."""
    return ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).cpu()


def to_channels(batch: torch.Tensor, channels: int) -> torch.Tensor:
    """A uint8 batch with ``channels`` channels: grey is repeated to RGB, alpha is dropped,
    RGB becomes grey by ITU-R 601 luma."""
    have = batch.shape[1]
    if have == 4:
        batch, have = batch[:, :3], 3
    if have == channels:
        return batch
    if have == 1 and channels == 3:
        return batch.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor(GREY_WEIGHTS).view(1, 3, 1, 1)
        grey = (batch.float() * weights).sum(dim=1, keepdim=True)
        return grey.round().clamp(0, 255).to(torch.uint8)
    raise AntError(f"images have {have} channels but the feature extractor takes {channels}")


def _batched(images: np.ndarray, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(images), size):
        chunk = np.ascontiguousarray(images[start : start + size])
        yield torch.from_numpy(chunk).permute(0, 3, 1, 2).contiguous()


def shard_images(spec: str) -> ImageSet:
    """The images of packed shards (a folder with meta.json, or a shard pattern), in shard order."""
    shard_set = resolve_shards(spec)
    if shard_set.meta is not None and shard_set.meta.format != "png":
        raise AntError(
            f"the shards in {spec} hold {shard_set.meta.format} arrays, not images: evaluate "
            "against image shards, an image folder or reference statistics"
        )

    def batches(size: int) -> Iterator[torch.Tensor]:
        loader = make_loader(
            spec,
            batch_size=size,
            rank=0,
            world_size=1,
            seed=0,
            resampled=False,
            shuffle_buffer=0,
            num_workers=0,
        )
        for x, _ in loader:
            yield float_to_uint8(x)

    return ImageSet(f"shards {spec}", shard_set.count, batches)


def folder_images(path: Path) -> ImageSet:
    """The images of a folder (flat, or one sub-folder per class), as RGB, in sorted order."""
    source = FolderSource(str(path))

    def batches(size: int) -> Iterator[torch.Tensor]:
        chunk: list[np.ndarray] = []
        for image, _ in source:
            chunk.append(image)
            if len(chunk) == size:
                yield from _batched(np.stack(chunk), size)
                chunk = []
        if chunk:
            yield from _batched(np.stack(chunk), size)

    return ImageSet(f"image folder {path}", len(source), batches)


def _npy_header(path: Path, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype of array ``name`` of an ``.npz`` file, without loading it."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise AntError(f"cannot read {name} of {path} ({exc})") from None
    return tuple(shape), dtype


def npz_images(path: Path, name: str = "arr_0") -> ImageSet:
    """Images of an ``.npz`` array ``[N, H, W, C]`` or ``[N, H, W]`` uint8 (an ADM batch: arr_0).

    The array is loaded only when the images are read.
    """
    shape, dtype = _npy_header(path, name)
    if dtype != np.uint8 or len(shape) not in (3, 4) or shape[0] == 0:
        raise AntError(
            f"{path}: expected uint8 images [N, H, W, C] in {name} (as in an ADM batch), got "
            f"{dtype} {list(shape)}"
        )

    def batches(size: int) -> Iterator[torch.Tensor]:
        images = load_npz_array(path, name)
        yield from _batched(images[..., None] if images.ndim == 3 else images, size)

    return ImageSet(f"npz {path}", shape[0], batches)


def load_npz_array(path: Path, name: str) -> np.ndarray:
    """Array ``name`` of an ``.npz`` file (no pickles); one-line error if it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return np.asarray(arrays[name])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise AntError(f"cannot read {name} of {path} ({exc})") from None


def read_png(path: Path) -> np.ndarray:
    """A PNG as uint8 ``[H, W, C]`` (grey gives C = 1)."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise AntError(f"cannot read sample {path} ({exc}): delete it and run again") from None
    return array[:, :, None] if array.ndim == 2 else array


def png_images(paths: Sequence[Path], description: str) -> ImageSet:
    """The PNG files ``paths`` (samples written by ``ant sample``), in the order given."""

    def batches(size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(paths), size):
            chunk = np.stack([read_png(p) for p in paths[start : start + size]])
            yield from _batched(chunk, size)

    return ImageSet(description, len(paths), batches)


def tensor_images(images: torch.Tensor, description: str) -> ImageSet:
    """Images already in memory: uint8 ``[N, C, H, W]``."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images [N, C, H, W], got {images.dtype} {images.shape}")

    def batches(size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(images), size):
            yield images[start : start + size]

    return ImageSet(description, len(images), batches)
