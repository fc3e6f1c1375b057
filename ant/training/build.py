"""Build the parts of a run (model, diffusion, clusters, method) from a resolved recipe."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ant.clustering import Clustering, Interval, TaskSpace, cluster_tasks, load_affinity
from ant.diffusion import GaussianDiffusion
from ant.errors import AntError
from ant.methods import GradientMethod, Method, TimestepWeighting
from ant.methods.vanilla import Vanilla
from ant.plugins import registry
from ant.recipes import Recipe
from ant.recipes.schema import MethodConfig, WeightingConfig
from ant.training.distributed import DistContext
from ant.training.ema import make_ema
from ant.training.grouped import GroupedGrads, describe_fallback
from ant.training.preflight import Preflight, check_sizes, preflight, uses_task_grads
from ant.training.step import TrainStep
from ant.training.timesteps import ClusterTable

logger = logging.getLogger(__name__)


def build_model(recipe: Recipe) -> nn.Module:
    """The denoising network named by ``model.name`` with the recipe's options."""
    section = recipe.model
    options = dict(section.model_extra or {})
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
    section: MethodConfig | WeightingConfig, key: str, num_tasks: int
) -> Method | TimestepWeighting:
    options = dict(section.model_extra or {})
    try:
        component = registry("method").build(section.name, num_tasks=num_tasks, **options)
    except ValueError as exc:
        raise AntError(f"{key} '{section.name}': {exc}") from None
    if not isinstance(component, Method | TimestepWeighting):
        raise AntError(
            f"{key} '{section.name}' built a {type(component).__name__}, not an "
            "ant.methods.Method or TimestepWeighting; the plugin providing it is incompatible "
            "with this ant"
        )
    return component


def build_method(
    recipe: Recipe, num_tasks: int, diffusion: GaussianDiffusion
) -> tuple[Method, TimestepWeighting | None]:
    """The cluster method and the per-timestep weighting inside clusters (if any).

    A timestep weighting named as ``method.name`` (``minsnr``) means plain averaging across
    clusters with that weighting; ``weighting.name`` composes one with any cluster method.
    """
    method = _build_component(recipe.method, "method", num_tasks)
    weighting: TimestepWeighting | None = None
    if recipe.weighting.name != "none":
        component = _build_component(recipe.weighting, "weighting", num_tasks)
        if not isinstance(component, TimestepWeighting):
            raise AntError(
                f"weighting '{recipe.weighting.name}' is a cluster method, not a timestep "
                "weighting: set it as method.name (see `ant plugins --kind method`)"
            )
        weighting = component
    if isinstance(method, TimestepWeighting):
        if weighting is not None:
            raise AntError(
                f"method '{recipe.method.name}' and weighting '{recipe.weighting.name}' are both "
                "timestep weightings: pick one, or use a cluster method as method.name"
            )
        weighting, method = method, Vanilla(num_tasks)
    assert isinstance(method, Method)
    if weighting is not None:
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


def _task_grads_mode(recipe: Recipe, model: nn.Module, sampling: str) -> str:
    """``train.task_grads``, or the fallback when grouped gradients do not cover the model."""
    mode = recipe.train.task_grads
    if mode != "grouped":
        return mode
    uncovered = GroupedGrads(model).uncovered
    if not uncovered:
        return mode
    fallback = "vmap" if sampling == "stratified" else "backward"
    logger.warning(describe_fallback(uncovered, fallback))
    return fallback


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
    ``ant train`` and ``ant recipe validate`` share (:mod:`ant.training.preflight`)."""
    check_sizes(recipe, world_size or 1)
    clustering = build_clustering(recipe)
    k = len(clustering.intervals)
    diffusion = build_diffusion(recipe)
    method, weighting = build_method(recipe, k, diffusion)
    checked = preflight(recipe, world_size, k, method, weighting)
    return RunPlan(clustering, diffusion, method, weighting, checked)


def build_train_step(recipe: Recipe, ctx: DistContext) -> tuple[TrainStep, Clustering]:
    """Every part of a training step on ``ctx.device``, and the timestep clustering.

    All ranks build the same initial weights (seeded by ``train.seed``), then reseed per rank so
    each draws its own timesteps and noise.
    """
    device = ctx.device
    torch.manual_seed(recipe.train.seed)
    plan = plan_run(recipe, ctx.world_size)
    if device.type == "cuda" and recipe.train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe).to(device)
    ema = make_ema(model)
    method, weighting = plan.method, plan.weighting
    method.to(device)
    parts: list[Method | TimestepWeighting] = [method]
    if weighting is not None:
        parts.append(weighting.to(device))
    torch.manual_seed(recipe.train.seed * 1_000_003 + ctx.rank)
    sampling = plan.checked.sampling
    task_grads = (
        _task_grads_mode(recipe, model, sampling)
        if uses_task_grads(recipe, method)
        else recipe.train.task_grads
    )
    step = TrainStep(
        model=model,
        ema=ema,
        diffusion=plan.diffusion,
        method=method,
        clusters=ClusterTable.from_intervals(plan.clustering.intervals, device),
        optimizer=build_optimizer(recipe, model, parts, device),
        ema_decay=recipe.train.ema_decay,
        precision=recipe.train.precision,
        grad_clip=recipe.optim.grad_clip,
        sampling=sampling,
        conditional=recipe.model.num_classes > 0,
        world_size=ctx.world_size,
        weighting=weighting,
        task_grads=task_grads,
        task_grads_dtype=recipe.train.task_grads_dtype,
        grad_accum=recipe.train.grad_accum,
        conflict_every=recipe.train.conflict_every,
        timestep_range=plan.checked.timestep_range,
        on_nonfinite=recipe.train.on_nonfinite,
    )
    return step, plan.clustering
