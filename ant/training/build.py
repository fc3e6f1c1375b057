"""Build the parts of a run (model, diffusion, clusters, method) from a resolved recipe."""

from __future__ import annotations

import logging

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
from ant.training.step import TrainStep
from ant.training.timesteps import ClusterTable, check_stratified_batch

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


def timestep_sampling(recipe: Recipe, method: Method) -> str:
    """``uniform`` for methods that ask for it (vanilla), else ``clustering.sampling``."""
    return "uniform" if method.timestep_sampling == "uniform" else recipe.clustering.sampling


def _uses_task_grads(recipe: Recipe, method: Method) -> bool:
    """Whether some steps need per-cluster gradients: gradient methods, conflict monitoring, and
    gradient accumulation of a method that is not affine in the losses."""
    train = recipe.train
    return (
        isinstance(method, GradientMethod)
        or train.conflict_every is not None
        or (train.grad_accum > 1 and not method.linear_in_losses)
    )


def _check_task_grads(
    recipe: Recipe, method: Method, weighting: TimestepWeighting | None, sampling: str
) -> None:
    if not _uses_task_grads(recipe, method):
        return
    if recipe.train.task_grads == "vmap":
        if sampling != "stratified":
            raise AntError(
                f"method '{recipe.method.name}' with train.task_grads=vmap needs stratified "
                "timestep sampling (one batch chunk per cluster): set clustering.sampling="
                "stratified, or train.task_grads=grouped"
            )
        if recipe.train.compile and isinstance(method, GradientMethod):
            raise AntError(
                "train.compile does not apply to the vmap per-cluster gradients of method "
                f"'{recipe.method.name}': set train.compile=false or train.task_grads=grouped"
            )
    if weighting is not None and any(True for _ in weighting.parameters()):
        raise AntError(
            f"weighting '{recipe.weighting.name}' learns its weights by back-propagation, which "
            "per-cluster gradient steps bypass: unset train.conflict_every (or use "
            "train.grad_accum=1 with this method)"
        )


def _check_grad_accum(recipe: Recipe, local_batch: int, k: int, sampling: str) -> None:
    parts = recipe.train.grad_accum
    unit = local_batch // k if sampling == "stratified" else local_batch
    if unit % parts:
        what = f"each cluster's share ({unit})" if sampling == "stratified" else "it"
        raise AntError(
            f"train.grad_accum={parts} must divide the per-rank batch ({local_batch}) so that "
            f"every micro-batch is stratified like it: {what} is not divisible by {parts}; "
            "change train.global_batch_size or train.grad_accum"
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


def _timestep_range(recipe: Recipe, sampling: str) -> tuple[int, int] | None:
    span = recipe.train.timestep_range
    if span is None:
        return None
    low, high = span
    if not 0 <= low <= high < recipe.diffusion.timesteps:
        raise AntError(
            f"train.timestep_range {list(span)} must satisfy 0 <= a <= b < diffusion.timesteps "
            f"({recipe.diffusion.timesteps})"
        )
    if sampling != "uniform":
        raise AntError(
            "train.timestep_range trains one interval-specific model: use it with "
            f"method.name=vanilla (or a timestep weighting), not '{recipe.method.name}'"
        )
    return low, high


def build_train_step(recipe: Recipe, ctx: DistContext) -> tuple[TrainStep, Clustering]:
    """Every part of a training step on ``ctx.device``, and the timestep clustering.

    All ranks build the same initial weights (seeded by ``train.seed``), then reseed per rank so
    each draws its own timesteps and noise.
    """
    device = ctx.device
    if recipe.train.global_batch_size % ctx.world_size != 0:
        raise AntError(
            f"train.global_batch_size ({recipe.train.global_batch_size}) must be divisible by "
            f"the number of ranks ({ctx.world_size})"
        )
    if device.type == "cuda" and recipe.train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe).to(device)
    ema = make_ema(model)
    clustering = build_clustering(recipe)
    intervals = clustering.intervals
    diffusion = build_diffusion(recipe)
    method, weighting = build_method(recipe, len(intervals), diffusion)
    method.to(device)
    parts: list[Method | TimestepWeighting] = [method]
    if weighting is not None:
        parts.append(weighting.to(device))
    torch.manual_seed(recipe.train.seed * 1_000_003 + ctx.rank)
    sampling = timestep_sampling(recipe, method)
    local_batch = recipe.train.global_batch_size // ctx.world_size
    if sampling == "stratified":
        check_stratified_batch(local_batch, len(intervals))
    _check_grad_accum(recipe, local_batch, len(intervals), sampling)
    _check_task_grads(recipe, method, weighting, sampling)
    task_grads = (
        _task_grads_mode(recipe, model, sampling)
        if _uses_task_grads(recipe, method)
        else recipe.train.task_grads
    )
    step = TrainStep(
        model=model,
        ema=ema,
        diffusion=diffusion,
        method=method,
        clusters=ClusterTable.from_intervals(intervals, device),
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
        timestep_range=_timestep_range(recipe, sampling),
    )
    return step, clustering
