"""Evaluation during training (``eval.every``): metrics of the EMA model for convergence curves.

``ant train`` hands the loop a :class:`TrainingEvaluation`, which calls
:func:`evaluate_during_training` on every rank at the steps it evaluates.
Each rank draws its share of ``eval.num_samples`` samples in memory with the recipe's ``sample``
settings and extracts their features on its device; rank 0 gathers the features, computes the
metrics against ``eval.ref`` (default: the training shards) and every rank gets the same dict,
keyed ``eval/<name>`` (``eval/fd``, ``eval/accuracy``, ...) for the logbook. Sample noise comes
from per-sample generators and the global RNG state is restored afterwards, so evaluating does
not change the training run.

The first call builds the extractor (rank 0 first, so a classifier is trained once) and the
reference statistics on rank 0; for a large reference compute them beforehand with ``ant eval``
(they are cached), since the other ranks wait for rank 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ant.core.progress import step_progress
from ant.core.runtime import Runtime
from ant.diffusion import GaussianDiffusion
from ant.evaluation.evaluator import Evaluator, parse_weights, split_spec
from ant.evaluation.images import float_to_uint8, tensor_images
from ant.evaluation.run import default_reference
from ant.recipe import Recipe
from ant.recipe.latent import recipe_vae
from ant.sampling.generate import BatchSampler
from ant.sampling.labels import class_labels
from ant.sampling.model_info import ModelInfo
from ant.sampling.settings import resolve_settings

PREFIX = "eval/"

Features = dict[str | None, dict[str, torch.Tensor]]
Part = tuple[list[int], Features | None, torch.Tensor | None]
"""One rank's sample indices, their features (none if it drew none) and their labels."""

_EVALUATORS: dict[tuple[object, ...], Evaluator] = {}


def training_evaluator(recipe: Recipe, ctx: Runtime, num_classes: int) -> Evaluator:
    """The evaluator of ``recipe``'s eval section on this rank, built once per process.

    Call it at the start of training to fail fast (missing weights, a bad reference); rank 0
    builds first, so a ``classifier:SHARDS`` extractor is trained once and cached.
    """
    section = recipe.eval
    reference = default_reference(recipe)
    key = (
        tuple(section.metrics),
        section.feature_extractor,
        reference,
        section.weights,
        str(ctx.device),
        section.batch_size,
        num_classes,
    )
    if key not in _EVALUATORS:
        weights = (section.weights,) if section.weights else ()

        def build() -> Evaluator:
            return Evaluator(
                metrics=section.metrics,
                feature_extractor=section.feature_extractor,
                reference=reference,
                weights=parse_weights(weights, split_spec(section.feature_extractor)[0]),
                num_classes=num_classes,
                device=ctx.device,
                batch_size=section.batch_size,
            )

        if ctx.is_main:
            _EVALUATORS[key] = build()
        ctx.barrier()
        if not ctx.is_main:
            _EVALUATORS[key] = build()
    return _EVALUATORS[key]


def _draw(
    ema: nn.Module,
    diffusion: GaussianDiffusion,
    recipe: Recipe,
    ctx: Runtime,
    description: str,
    show: bool,
) -> tuple[list[int], torch.Tensor, torch.Tensor | None]:
    info = ModelInfo.of(ema)
    settings = resolve_settings(
        recipe.sample,
        timesteps=diffusion.num_timesteps,
        info=info,
        num=recipe.eval.num_samples,
        batch_size=recipe.eval.batch_size,
    )
    indices = list(range(ctx.rank, settings.num, ctx.world_size))
    draw = BatchSampler.from_settings(
        ema, diffusion, settings, ctx.device, recipe_vae(recipe, ctx.device)
    )
    labels = class_labels(indices, info.num_classes)
    size = settings.batch_size
    starts = range(0, len(indices), size)
    chunks = []
    with step_progress(len(starts) * draw.num_steps, description, show) as advance:
        for start in starts:
            batch = indices[start : start + size]
            batch_labels = None if labels is None else labels[start : start + size]
            chunks.append(float_to_uint8(draw(batch, batch_labels, settings.seed, advance)))
    shape = (0, *draw.output_shape)
    images = torch.cat(chunks) if chunks else torch.zeros(shape, dtype=torch.uint8)
    return indices, images, labels


def evaluate_during_training(
    ema: nn.Module,
    diffusion: GaussianDiffusion,
    recipe: Recipe,
    step: int,
    ctx: Runtime,
    *,
    show: bool = False,
) -> dict[str, float]:
    """Metrics of the EMA model at ``step``, keyed ``eval/<name>``, on every rank.

    Call it on every rank at the same step (it synchronises them). ``ema`` is the EMA model on
    ``ctx.device`` (not wrapped in DDP); ``diffusion`` the training diffusion. The dict holds
    ``eval/<metric>`` values and ``eval/seconds``; log it with the step on rank 0. ``show``
    draws a sampling progress bar (with ETA) on rank 0.
    """
    start = time.perf_counter()
    info = ModelInfo.of(ema)
    evaluator = training_evaluator(recipe, ctx, info.num_classes)
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        description = f"evaluating step {step}"
        indices, images, labels = _draw(
            ema, diffusion, recipe, ctx, description, show and ctx.is_main
        )
        features = (
            evaluator.sample_features(tensor_images(images, "samples")) if len(images) else None
        )
        parts: list[Part] = [(indices, features, labels)]
        if ctx.distributed:
            gathered: list[Part | None] = [None] * ctx.world_size
            dist.all_gather_object(gathered, parts[0])
            parts = [part for part in gathered if part is not None]
        result: dict[str, float] = {}
        if ctx.is_main:
            result = _metrics(evaluator, parts)
            result[f"{PREFIX}seconds"] = time.perf_counter() - start
        if ctx.distributed:
            box: list[object] = [result]
            dist.broadcast_object_list(box, src=0)
            result = dict(box[0]) if isinstance(box[0], dict) else {}
    return result


def _metrics(evaluator: Evaluator, parts: list[Part]) -> dict[str, float]:
    order: list[int] = []
    chunks: dict[str | None, dict[str, list[torch.Tensor]]] = {}
    label_chunks: list[torch.Tensor] = []
    for indices, features, labels in parts:
        if features is None:
            continue
        order.extend(indices)
        for name, layers in features.items():
            for layer, values in layers.items():
                chunks.setdefault(name, {}).setdefault(layer, []).append(values)
        if isinstance(labels, torch.Tensor):
            label_chunks.append(labels)
    permutation = torch.tensor(order).argsort()
    merged: Features = {
        name: {layer: torch.cat(pieces)[permutation] for layer, pieces in layers.items()}
        for name, layers in chunks.items()
    }
    all_labels = torch.cat(label_chunks)[permutation] if label_chunks else None
    metrics = evaluator.compute(merged, all_labels)
    return {f"{PREFIX}{name}": value for name, value in metrics.items()}


@dataclass(frozen=True)
class TrainingEvaluation:
    """The trainer's ``eval.every`` callback for ``recipe`` (:class:`ant.training.loop.Evaluation`).

    ``prepare`` builds the evaluator before the first step (a bad eval section fails fast);
    calling it evaluates the EMA model with :func:`evaluate_during_training`.
    """

    recipe: Recipe

    def prepare(self, ema: nn.Module, ctx: Runtime) -> None:
        training_evaluator(self.recipe, ctx, ModelInfo.of(ema).num_classes)

    def __call__(
        self, ema: nn.Module, diffusion: GaussianDiffusion, step: int, ctx: Runtime, show: bool
    ) -> dict[str, float]:
        return evaluate_during_training(ema, diffusion, self.recipe, step, ctx, show=show)
