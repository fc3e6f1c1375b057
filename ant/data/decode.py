"""Turning shard samples into training arrays and batches."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from ant.data.images import decode_image

UNLABELLED = -1
"""The label of samples without a ``cls`` entry (unlabelled data sets): ``y`` is filled with -1."""

Decoded = tuple[np.ndarray, int, str]
Pair = tuple[torch.Tensor, torch.Tensor]
Keyed = tuple[torch.Tensor, torch.Tensor, list[str]]
Batch = Pair | Keyed


def decode_sample(sample: dict[str, Any]) -> Decoded:
    """``(x, y, key)`` of a shard sample: ``x`` float32 ``[C, H, W]``, ``y`` its label.

    A ``png`` payload maps uint8 pixels ``v`` to ``v / 127.5 - 1`` in [-1, 1]; an ``x.npy``
    payload is taken as it is (already normalised), as float32. Samples without ``cls`` get
    :data:`UNLABELLED`. Raises ValueError (or PIL's OSError) for a sample it cannot decode.
    """
    if "x.npy" in sample:
        x = np.load(io.BytesIO(sample["x.npy"]), allow_pickle=False).astype(np.float32, copy=False)
        if x.ndim != 3:
            raise ValueError(f"x.npy has shape {list(x.shape)}, expected [C, H, W]")
    elif "png" in sample:
        image = decode_image(sample["png"])
        x = image.transpose(2, 0, 1).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    else:
        payloads = sorted(k for k in sample if not k.startswith("__")) or ["nothing"]
        raise ValueError(f"no png or x.npy payload (found {', '.join(payloads)})")
    y = int(sample["cls"]) if "cls" in sample else UNLABELLED
    return x, y, str(sample["__key__"])


def check_label(y: int, num_classes: int | None) -> None:
    """Raise ValueError unless ``y`` is a class of a ``num_classes``-way model (None: any)."""
    if num_classes is None:
        return
    if y == UNLABELLED:
        raise ValueError(
            f"it has no label but model.num_classes is {num_classes} (set model.num_classes=0 "
            "for unlabelled data)"
        )
    if not 0 <= y < num_classes:
        raise ValueError(
            f"its label {y} is outside 0..{num_classes - 1} (model.num_classes={num_classes})"
        )


def collate(samples: list[Decoded], return_keys: bool = False) -> Batch:
    """Stack decoded samples into ``(x [B, C, H, W] float32, y [B] int64)`` (plus keys)."""
    x = torch.from_numpy(np.stack([s[0] for s in samples]))
    y = torch.tensor([s[1] for s in samples], dtype=torch.int64)
    if return_keys:
        return x, y, [s[2] for s in samples]
    return x, y
