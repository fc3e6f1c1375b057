"""Samples to evaluate: a resumable folder of PNGs with their labels, and the ADM ``.npz`` export.

The folder holds ``sample-000000.png``, ... and ``samples.json``, which records the settings the
samples were drawn with and the class each sample was drawn for (``labels``; ``null`` for an
unconditional model). Files are written as their batch finishes, so an interrupted evaluation
resumes where it stopped; a folder whose settings differ from the requested ones is refused
rather than mixed.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ant.core.atomic import atomic_write
from ant.core.errors import AntError
from ant.core.runtime import Runtime
from ant.evaluation.cache import write_json
from ant.evaluation.images import ImageSet, png_images, to_channels
from ant.sampling.files import sample_path
from ant.sampling.folder import sample_to_folder
from ant.sampling.generate import BatchSampler
from ant.sampling.labels import class_labels
from ant.sampling.settings import SampleSettings

MANIFEST_NAME = "samples.json"


@dataclass(frozen=True)
class SampleRequest:
    """What the samples of a folder are: model and sampler settings (not how many)."""

    model: str
    """The checkpoint (path, step and weights) or the composition of models."""
    sampler: str
    steps: int
    eta: float
    cfg_scale: float
    seed: int
    clip_x0: bool
    num_classes: int

    @classmethod
    def of(cls, model: str, settings: SampleSettings, num_classes: int) -> SampleRequest:
        """The request of drawing with ``settings`` from ``model`` (the folder's identity)."""
        return cls(
            model=model,
            sampler=settings.sampler,
            steps=settings.steps,
            eta=settings.eta,
            cfg_scale=settings.cfg_scale,
            seed=settings.seed,
            clip_x0=settings.clip_x0,
            num_classes=num_classes,
        )


def _check_manifest(folder: Path, request: SampleRequest) -> None:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return
    try:
        found = json.loads(path.read_text()).get("settings", {})
    except (OSError, ValueError, AttributeError):
        raise AntError(f"{path} is unreadable: delete {folder} and run again") from None
    wanted = asdict(request)
    for key, value in wanted.items():
        if found.get(key) != value:
            raise AntError(
                f"{folder} holds samples drawn with {key}={found.get(key)!r}, not {value!r}: "
                "pass another --samples-dir, or delete that folder"
            )


def draw_to_folder(
    draw: BatchSampler,
    folder: Path,
    request: SampleRequest,
    *,
    num: int,
    batch_size: int,
    runtime: Runtime,
    progress: bool = False,
) -> tuple[int, int]:
    """Draw samples 0..num-1 into ``folder`` (this rank's share), skipping those already there.

    Rank 0 writes ``samples.json`` with the settings and every sample's label. Returns
    (written, skipped) summed over ranks; with several ranks this waits for all of them.
    """
    _check_manifest(folder, request)
    labels = class_labels(range(num), request.num_classes)
    if runtime.rank == 0:
        write_json(
            folder / MANIFEST_NAME,
            {
                "settings": asdict(request),
                "num": num,
                "labels": None if labels is None else labels.tolist(),
            },
        )
    written, skipped = sample_to_folder(
        draw,
        folder,
        num=num,
        seed=request.seed,
        batch_size=batch_size,
        class_label=None,
        runtime=runtime,
        progress=progress and runtime.rank == 0,
    )
    total_written, total_skipped = runtime.sum_over_ranks([written, skipped])
    return total_written, total_skipped


def folder_labels(folder: Path, num: int) -> torch.Tensor | None:
    """The labels of samples 0..num-1, from ``samples.json`` (``None``: unconditional)."""
    path = folder / MANIFEST_NAME
    try:
        labels = json.loads(path.read_text()).get("labels")
    except (OSError, ValueError, AttributeError):
        raise AntError(f"{path} is missing or unreadable: sample again into {folder}") from None
    if labels is None:
        return None
    if len(labels) < num:
        raise AntError(f"{path} has labels for {len(labels)} samples, not {num}: sample again")
    return torch.tensor(labels[:num], dtype=torch.long)


def folder_images(folder: Path, num: int) -> ImageSet:
    """Samples 0..num-1 of ``folder`` as an image set; all of them must exist."""
    paths = [sample_path(folder, i, ".png") for i in range(num)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise AntError(
            f"{len(missing)} of {num} samples are missing in {folder} (first: {missing[0].name}): "
            "run the evaluation again to draw them"
        )
    return png_images(paths, f"samples in {folder}")


def export_adm_npz(
    images: ImageSet, labels: torch.Tensor | None, path: Path, *, batch_size: int = 256
) -> Path:
    """Write ``images`` as an ADM-style batch: ``arr_0`` uint8 ``[N, H, W, 3]`` (grey repeated
    to RGB, as the TensorFlow evaluator needs) and ``arr_1`` the labels, if any.

    The array is streamed into the archive batch by batch, so memory stays small.
    """
    if images.count is None:
        raise ValueError("the number of images must be known to export them")
    with atomic_write(path) as handle, zipfile.ZipFile(handle, "w", allowZip64=True) as archive:
        header: dict[str, Any] | None = None
        with archive.open("arr_0.npy", "w", force_zip64=True) as member:
            for batch in images.batches(batch_size):
                rgb = to_channels(batch, 3).permute(0, 2, 3, 1).contiguous().numpy()
                if header is None:
                    header = {
                        "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                        "fortran_order": False,
                        "shape": (images.count, *rgb.shape[1:]),
                    }
                    np.lib.format.write_array_header_2_0(member, header)
                member.write(rgb.tobytes())
        if labels is not None:
            with archive.open("arr_1.npy", "w") as member:
                np.lib.format.write_array(member, labels.numpy().astype(np.int64))
    return path
