"""``ant analyze affinity`` end to end: checkpoints and data in, affinity matrix and plots out.

The task-affinity matrix of Go et al. (NeurIPS 2023, Sec. 3, Fig. 1): ``A[i, j]`` is the cosine
similarity of the training gradients of timestep groups i and j, each the mean over N real
samples, averaged over the checkpoints given. The G group gradients are never held in full by
default: each is reduced to a D-dimensional count sketch (:class:`~ant.experiments.affinity.
CountSketch`); ``exact`` keeps the full ``G x P`` gradients when they fit the memory budget.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ant.core.atomic import atomic_write
from ant.core.checkpoint import CHECKPOINT_DIR, latest_checkpoint
from ant.core.errors import AntError
from ant.core.progress import progress_bar
from ant.core.runtime import Runtime
from ant.data.loader import make_loader
from ant.experiments.affinity import (
    CountSketch,
    cosine_matrix,
    gap_spearman,
    group_bounds,
    mean_matrix,
)
from ant.experiments.affinity_plot import plot_affinity
from ant.experiments.group_grads import accumulate_group_gradients
from ant.sampling.loading import SamplingModel, load_sampling_model
from ant.training.task_grads import trainable

GIB = 1 << 30
OUTPUTS = ("affinity.npy", "affinity.json", "affinity_timestep.png", "affinity_logsnr.png")


@dataclass(frozen=True)
class AffinitySettings:
    """What to measure and how (the options of ``ant analyze affinity``)."""

    checkpoints: tuple[str, ...]
    data: str
    groups: int = 100
    samples: int = 1000
    batch_size: int = 25
    group_block: int = 10
    sketch_dim: int = 1 << 16
    exact: bool = False
    max_memory_gib: float = 4.0
    raw_weights: bool = False
    train_mode: bool = False
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class AffinityResult:
    """The averaged ``G x G`` matrix, the per-checkpoint ones, and the run's metadata."""

    affinity: np.ndarray
    per_checkpoint: list[np.ndarray]
    metadata: dict[str, Any]
    log_snr: np.ndarray = field(repr=False)
    """log SNR(t) of the checkpoints' schedule, ``[T]``."""


def resolve_checkpoint(path: str) -> Path:
    """The checkpoint file ``path`` names: the file itself, or a run directory's latest one."""
    given = Path(path)
    if given.is_dir():
        latest = latest_checkpoint(given)
        if latest is None:
            raise AntError(f"no checkpoint in {given}: expected {CHECKPOINT_DIR}/step-*.pt there")
        return latest
    if not given.is_file():
        raise AntError(f"checkpoint not found: {given}")
    return given


def check_settings(settings: AffinitySettings) -> None:
    """Reject impossible settings before any checkpoint or data is read."""
    if not settings.checkpoints:
        raise AntError("give at least one checkpoint (a .pt file or a run directory)")
    positive = {
        "--samples": settings.samples,
        "--batch": settings.batch_size,
        "--group-block": settings.group_block,
        "--sketch-dim": settings.sketch_dim,
    }
    for name, value in positive.items():
        if value < 1:
            raise AntError(f"{name} must be >= 1, got {value}")
    if settings.samples < 2:
        raise AntError("--samples must be >= 2: the affinity is an average over real samples")
    if not settings.max_memory_gib > 0:
        raise AntError(f"--max-memory must be > 0 GiB, got {settings.max_memory_gib}")


def load_samples(
    shards: str, count: int, seed: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` samples ``(x [N, C, H, W], y [N])`` of one seeded pass over shards."""
    loader = make_loader(
        shards, batch_size=batch_size, rank=0, world_size=1, seed=seed, resampled=False
    )
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    held = 0
    for x, y in loader:
        xs.append(x)
        ys.append(y)
        held += x.shape[0]
        if held >= count:
            break
    if held < count:
        raise AntError(
            f"the data in {shards} has only {held} samples, fewer than --samples {count}: "
            f"pass --samples {held} or less"
        )
    return torch.cat(xs)[:count], torch.cat(ys)[:count]


def _check_model(
    loaded: SamplingModel, path: Path, x: torch.Tensor, y: torch.Tensor, first: SamplingModel
) -> torch.Tensor | None:
    """Check a checkpoint against the data and the first checkpoint; the labels to feed it."""
    section, diffusion = loaded.recipe.model, loaded.recipe.diffusion
    if (section.in_channels, section.input_size, section.input_size) != tuple(x.shape[1:]):
        raise AntError(
            f"{path}: model '{section.name}' takes {section.in_channels}x{section.input_size}x"
            f"{section.input_size} inputs but the data holds {'x'.join(map(str, x.shape[1:]))}"
        )
    reference = first.recipe.diffusion
    if (diffusion.timesteps, diffusion.schedule) != (reference.timesteps, reference.schedule):
        raise AntError(
            f"{path}: its diffusion ({diffusion.timesteps} steps, {diffusion.schedule}) differs "
            f"from the first checkpoint's ({reference.timesteps} steps, {reference.schedule}); "
            "average only checkpoints of the same process"
        )
    if section.num_classes == 0:
        return None
    if bool(((y < 0) | (y >= section.num_classes)).any()):
        raise AntError(
            f"{path}: model '{section.name}' is conditional on {section.num_classes} classes but "
            "the data has missing or out-of-range labels; use labelled data"
        )
    return y


def compute_affinity(
    settings: AffinitySettings, *, progress: bool = True, log: Callable[[str], None] | None = None
) -> AffinityResult:
    """Measure the task-affinity matrix of ``settings`` (see the module docs).

    With several checkpoints, ``log`` gets each one's gap correlation. Every problem with the
    input (missing or corrupt checkpoint, data, a G that does not divide T, a memory budget the
    exact mode exceeds) raises a one-line :class:`AntError`.
    """
    check_settings(settings)
    started = time.perf_counter()
    paths = [resolve_checkpoint(path) for path in settings.checkpoints]
    device = Runtime.from_env(settings.device).device
    first = load_sampling_model(paths[0], raw_weights=settings.raw_weights)
    timesteps = first.diffusion.num_timesteps
    try:
        bounds = group_bounds(timesteps, settings.groups)
    except ValueError as exc:
        raise AntError(f"--groups: {exc}") from None
    num_params = sum(p.numel() for _, p in trainable(first.model))
    if settings.exact:
        needed = settings.groups * num_params * 4
        if needed > settings.max_memory_gib * GIB:
            raise AntError(
                f"--exact needs {needed / GIB:.1f} GiB for {settings.groups} full gradients of "
                f"{num_params:,} parameters, over --max-memory {settings.max_memory_gib:g} GiB: "
                "drop --exact (sketch), use fewer --groups or raise --max-memory"
            )
    sketch = (
        None
        if settings.exact
        else CountSketch(num_params, settings.sketch_dim, settings.seed, device)
    )
    x, y = load_samples(settings.data, settings.samples, settings.seed, settings.batch_size)
    batches = math.ceil(settings.samples / settings.batch_size)
    blocks = math.ceil(settings.groups / settings.group_block)
    matrices: list[np.ndarray] = []
    entries: list[dict[str, Any]] = []
    with progress_bar(progress) as bar:
        task = bar.add_task("affinity", total=len(paths) * batches * blocks)
        for index, path in enumerate(paths):
            loaded = (
                first if index == 0 else load_sampling_model(path, raw_weights=settings.raw_weights)
            )
            labels = _check_model(loaded, path, x, y, first)
            if sum(p.numel() for _, p in trainable(loaded.model)) != num_params:
                raise AntError(f"{path}: its model differs in size from the first checkpoint's")
            model = loaded.model.to(device).train(settings.train_mode)
            bar.update(task, description=f"affinity {index + 1}/{len(paths)}")
            torch.manual_seed(settings.seed)
            grads = accumulate_group_gradients(
                model,
                loaded.diffusion,
                x,
                labels,
                bounds,
                reduce=sketch.apply if sketch is not None else _keep,
                seed=settings.seed,
                batch_size=settings.batch_size,
                group_block=settings.group_block,
                device=device,
                advance=lambda: bar.advance(task),
            )
            try:
                matrix = cosine_matrix(grads.vectors)
            except ValueError as exc:
                raise AntError(f"{path}: {exc}; the model may be untrained") from None
            matrices.append(matrix)
            entries.append(
                {
                    "path": str(path),
                    "step": loaded.step,
                    "spearman_gap": gap_spearman(matrix),
                    "group_loss": [round(float(v), 6) for v in grads.loss],
                }
            )
            if log is not None and len(paths) > 1:
                log(f"{path}: Spearman(gap, affinity) = {_format(gap_spearman(matrix))}")
            del model, loaded, grads
    affinity = mean_matrix(matrices)
    log_snr = first.diffusion.log_snr(torch.arange(timesteps)).double().numpy()
    centres = [(start + end) / 2 for start, end in bounds]
    exact = sketch is None or sketch.identity
    metadata = {
        "checkpoints": entries,
        "timesteps": timesteps,
        "schedule": first.recipe.diffusion.schedule,
        "groups": settings.groups,
        "group_width": timesteps // settings.groups,
        "group_bounds": [[start, end] for start, end in bounds],
        "group_log_snr": [
            round(float(v), 6) for v in np.interp(centres, np.arange(timesteps), log_snr)
        ],
        "samples": settings.samples,
        "batch_size": settings.batch_size,
        "group_block": settings.group_block,
        "parameters": num_params,
        "estimate": "exact" if exact else "sketch",
        "sketch_dim": None if sketch is None else sketch.dim,
        "seed": settings.seed,
        "weights": "raw" if settings.raw_weights else "ema",
        "mode": "train" if settings.train_mode else "eval",
        "loss": "hybrid" if first.diffusion.learn_sigma else "mse",
        "data": settings.data,
        "device": str(device),
        "spearman_gap": gap_spearman(affinity),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return AffinityResult(affinity, matrices, metadata, log_snr)


def _keep(vectors: torch.Tensor) -> torch.Tensor:
    return vectors.float()


def _format(value: float | None) -> str:
    return "undefined" if value is None else f"{value:+.3f}"


def write_outputs(result: AffinityResult, out: Path) -> list[Path]:
    """Write ``affinity.npy`` (float32), ``affinity.json`` and the two heatmaps into ``out``."""
    meta = result.metadata
    timesteps, groups = meta["timesteps"], meta["groups"]
    bounds = meta["group_bounds"]
    paths = [out / name for name in OUTPUTS]
    with atomic_write(paths[0]) as handle:
        np.save(handle, result.affinity.astype(np.float32))
    with atomic_write(paths[1], text=True) as handle:
        handle.write(json.dumps(meta, indent=2) + "\n")
    step_edges = np.array([start for start, _ in bounds] + [timesteps], dtype=np.float64) - 0.5
    snr_edges = np.interp(step_edges, np.arange(timesteps), result.log_snr)
    estimate = f"sketch D={meta['sketch_dim']}" if meta["estimate"] == "sketch" else "exact"
    title = (
        f"task affinity: {groups} groups x {meta['group_width']} timesteps, "
        f"{meta['samples']} samples\n{len(meta['checkpoints'])} checkpoint(s), {estimate}, "
        f"Spearman(gap, A) = {_format(meta['spearman_gap'])}"
    )
    plot_affinity(paths[2], result.affinity, step_edges + 0.5, axis_label="timestep t", title=title)
    plot_affinity(
        paths[3], result.affinity, snr_edges, axis_label="log SNR (group centre)", title=title
    )
    return paths
