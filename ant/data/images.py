"""Image helpers: resizing, the ADM centre crop, and lossless PNG encoding and decoding."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PNG_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 ``[H, W, C]`` image to ``[size, size, C]`` with PIL bicubic resampling."""
    pil = to_pil(image).resize((size, size), resample=Image.Resampling.BICUBIC)
    return from_pil(pil, image.shape[2])


def adm_center_crop(pil: Image.Image, size: int) -> Image.Image:
    """The ADM (guided-diffusion) square crop of ``pil`` to ``size`` x ``size``.

    Halve the image with BOX filtering while its short side is at least ``2 * size``, resize it
    with BICUBIC so the short side is ``size``, then cut the centred ``size`` x ``size`` square.
    """
    while min(pil.size) >= 2 * size:
        pil = pil.resize((pil.width // 2, pil.height // 2), resample=Image.Resampling.BOX)
    scale = size / min(pil.size)
    target = (round(pil.width * scale), round(pil.height * scale))
    pil = pil.resize(target, resample=Image.Resampling.BICUBIC)
    left = (pil.width - size) // 2
    top = (pil.height - size) // 2
    return pil.crop((left, top, left + size, top + size))


def to_pil(image: np.ndarray) -> Image.Image:
    """A PIL image of a uint8 ``[H, W, C]`` array with 1 (grey), 3 (RGB) or 4 (RGBA) channels."""
    return Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)


def from_pil(pil: Image.Image, channels: int) -> np.ndarray:
    """A uint8 ``[H, W, channels]`` array of ``pil`` converted to the matching PIL mode."""
    array = np.asarray(pil.convert(PNG_MODES[channels]), dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 ``[H, W, C]`` image (grey stays one channel)."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """A uint8 ``[H, W, C]`` array from encoded image bytes (grey gives ``C = 1``)."""
    with Image.open(io.BytesIO(data)) as opened:
        pil: Image.Image = opened
        if pil.mode not in ("L", "RGB", "RGBA"):
            pil = pil.convert("RGBA" if "A" in pil.getbands() else "RGB")
        array = np.asarray(pil, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array
