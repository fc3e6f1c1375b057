"""Build the parts of a run (model, diffusion, clusters, method) from a resolved recipe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ant.clustering import Clustering, Interval, TaskSpace, cluster_tasks, load_affinity
from ant.core.errors import AntError
from ant.core.logbook import RunLogger
from ant.core.plugins import registry
from ant.diffusion import GaussianDiffusion
from ant.methods import GradientMethod, Method, TimestepWeighting
from ant.models.routing import RoutingSpec
from ant.recipe import Recipe
from ant.recipe.preflight import Preflight, check_sizes, preflight
from ant.recipe.schema import MethodConfig, WeightingConfig


def build_model(recipe: Recipe) -> nn.Module:
    """The denoising network named by ``model.name`` with the recipe's options."""
    section = recipe.model
    options = dict(section.model_extra or {})
    if section.routing is not None:
        options["routing"] = RoutingSpec(
            section.routing.ratio, section.routing.alpha, recipe.diffusion.timesteps
        )
    try:
        return registry("model").build(
            section.name,
            input_size=section.input_size,
            in_channels=section.in_channels,
            num_classes=section.num_classes,
            class_dropout=section.class_dropout,
            learn_sigma=recipe.diffusion.learn_sigma,
            **options,
        )
    except ValueError as exc:
        raise AntError(f"model '{section.name}': {exc}") from None


def build_diffusion(recipe: Recipe) -> GaussianDiffusion:
    """The Gaussian diffusion process of the recipe's ``diffusion`` section."""
    section = recipe.diffusion
    return GaussianDiffusion.from_schedule(
        section.schedule,
        section.timesteps,
        prediction_type=section.prediction,
        learn_sigma=section.learn_sigma,
    )


def build_clustering(recipe: Recipe) -> Clustering:
    """The recipe's clustering objective run on its schedule's tasks (Go et al. 2023, Sec. 4.1).

    The task space has ``diffusion.timesteps`` tasks with the log-SNR of ``diffusion.schedule``
    and, if ``clustering.affinity`` is set, that task-affinity matrix; extra keys of the
    ``clustering`` section are the objective's options.
    """
    section = recipe.clustering
    timesteps = recipe.diffusion.timesteps
    affinity = load_affinity(section.affinity, timesteps) if section.affinity else None
    space = TaskSpace.from_schedule(recipe.diffusion.schedule, timesteps, affinity)
    options = dict(section.model_extra or {})
    return cluster_tasks(section.objective, space, section.k, options, label="clustering.objective")


def build_intervals(recipe: Recipe) -> list[Interval]:
    """The k timestep clusters from the recipe's clustering objective."""
    return build_clustering(recipe).intervals


def _build_component(
    kind: str, section: MethodConfig | WeightingConfig, key: str, **injected: Any
) -> Any:
    options = dict(section.model_extra or {})
    try:
        return registry(kind).build(section.name, **injected, **options)
    except ValueError as exc:
        raise AntError(f"{key} '{section.name}': {exc}") from None


def build_method(
    recipe: Recipe, num_tasks: int, diffusion: GaussianDiffusion
) -> tuple[Method, TimestepWeighting | None]:
    """The cluster method (``method``, from the ``method`` registry) and the per-timestep
    weighting inside clusters (``weighting``, from the ``weighting`` registry), if any."""
    method = _build_component("method", recipe.method, "method", num_tasks=num_tasks)
    if not isinstance(method, Method):
        raise AntError(
            f"method '{recipe.method.name}' built a {type(method).__name__}, not an "
            "ant.methods.Method; the plugin providing it is incompatible with this ant"
        )
    if recipe.weighting.name == "none":
        return method, None
    weighting = _build_component("weighting", recipe.weighting, "weighting")
    if not isinstance(weighting, TimestepWeighting):
        raise AntError(
            f"weighting '{recipe.weighting.name}' built a {type(weighting).__name__}, not an "
            "ant.methods.TimestepWeighting; the plugin providing it is incompatible with this ant"
        )
    weighting.bind(diffusion)
    if isinstance(method, GradientMethod) and any(True for _ in weighting.parameters()):
        raise AntError(
            f"weighting '{recipe.weighting.name}' learns its weights by back-propagation, "
            f"which gradient method '{recipe.method.name}' bypasses: combine it with a "
            "loss-based method (uw, vanilla, famo, dwa, rlw)"
        )
    return method, weighting


def build_optimizer(
    recipe: Recipe,
    model: nn.Module,
    parts: list[Method | TimestepWeighting],
    device: torch.device,
) -> torch.optim.Optimizer:
    """AdamW over the model's trainable parameters plus the parts' own parameter groups."""
    optim = recipe.optim
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [group for part in parts for group in part.param_groups()]
    return torch.optim.AdamW(
        [{"params": params}, *groups],
        lr=optim.lr,
        betas=optim.betas,
        eps=optim.eps,
        weight_decay=optim.weight_decay,
        fused=device.type == "cuda",
    )


def logger_specs(recipe: Recipe) -> list[tuple[str, dict[str, Any]]]:
    """``train.loggers`` as ``(name, options)`` pairs."""
    return [
        (entry, {}) if isinstance(entry, str) else (entry.name, dict(entry.model_extra or {}))
        for entry in recipe.train.loggers
    ]


def build_loggers(recipe: Recipe, run_dir: Path, start_step: int) -> list[RunLogger]:
    """The run's loggers (``train.loggers``, from the ``logger`` registry), each given the run
    directory, the step it continues from and the resolved recipe as its configuration."""
    config = recipe.model_dump(mode="json")
    loggers: list[RunLogger] = []
    for name, options in logger_specs(recipe):
        try:
            loggers.append(
                registry("logger").build(
                    name, run_dir=run_dir, start_step=start_step, config=config, **options
                )
            )
        except (TypeError, ValueError) as exc:
            raise AntError(f"train.loggers: '{name}': {exc}") from None
    return loggers


@dataclass
class RunPlan:
    """The cheap parts of a run, built and checked before any weight: the clustering, the
    diffusion, the method and weighting, and what :func:`preflight` decided."""

    clustering: Clustering
    diffusion: GaussianDiffusion
    method: Method
    weighting: TimestepWeighting | None
    checked: Preflight


def plan_run(recipe: Recipe, world_size: int | None) -> RunPlan:
    """Build the clusters, the diffusion and the method, and run the pre-flight checks that
    ``ant train`` and ``ant recipe validate`` share (:mod:`ant.recipe.preflight`)."""
    check_sizes(recipe, world_size or 1)
    clustering = build_clustering(recipe)
    k = len(clustering.intervals)
    diffusion = build_diffusion(recipe)
    method, weighting = build_method(recipe, k, diffusion)
    checked = preflight(recipe, world_size, k, method, weighting)
    return RunPlan(clustering, diffusion, method, weighting, checked)
