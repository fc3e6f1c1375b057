"""Sampling into a folder, one file per sample, sharded over ranks and resumable."""

from __future__ import annotations

from pathlib import Path

from ant.core.progress import step_progress
from ant.core.runtime import Runtime
from ant.sampling.arrays import save_arrays
from ant.sampling.files import sample_path
from ant.sampling.generate import BatchSampler
from ant.sampling.images import save_images
from ant.sampling.labels import class_labels


def sample_to_folder(
    draw: BatchSampler,
    folder: Path,
    *,
    num: int,
    seed: int,
    batch_size: int,
    class_label: int | None,
    runtime: Runtime,
    npy: bool = False,
    progress: bool = False,
) -> tuple[int, int]:
    """Write samples 0..num-1 of ``seed`` as ``FOLDER/sample-NNNNNN.png`` (``.npy`` with ``npy``).

    This rank draws its share of the indices (:meth:`Runtime.shard`), skipping samples whose
    file exists, so an interrupted run resumes; every file is written as soon as its batch is
    done. Labels cycle through the classes by index unless ``class_label`` is given. Returns
    (written, skipped) for this rank.
    """
    suffix, save = (".npy", save_arrays) if npy else (".png", save_images)
    mine = runtime.shard(range(num))
    todo = [i for i in mine if not sample_path(folder, i, suffix).exists()]
    folder.mkdir(parents=True, exist_ok=True)
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    description = (
        f"sampling (rank {runtime.rank} of {runtime.world_size})"
        if runtime.distributed
        else "sampling"
    )
    with step_progress(len(batches) * draw.num_steps, description, progress) as advance:
        for batch in batches:
            labels = class_labels(batch, draw.info.num_classes, class_label)
            save(draw(batch, labels, seed, on_step=advance), folder, batch)
    return len(todo), len(mine) - len(todo)
