"""Build the parts of a run (model, diffusion, clusters, method) from a resolved recipe."""

from __future__ import annotations

import torch
from torch import nn

from ant.clustering import Interval, validate_intervals
from ant.diffusion import GaussianDiffusion
from ant.errors import AntError
from ant.methods import LossMethod
from ant.plugins import registry
from ant.recipes import Recipe
from ant.training.distributed import DistContext
from ant.training.ema import make_ema
from ant.training.step import TrainStep
from ant.training.timesteps import ClusterTable, check_stratified_batch


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


def build_intervals(recipe: Recipe) -> list[Interval]:
    """The k timestep clusters from the recipe's clustering objective."""
    section = recipe.clustering
    options = dict(section.model_extra or {})
    objective = registry("objective").build(section.objective, **options)
    try:
        intervals: list[Interval] = objective.cluster(recipe.diffusion.timesteps, section.k)
        validate_intervals(intervals, recipe.diffusion.timesteps)
    except ValueError as exc:
        raise AntError(f"clustering.objective '{section.objective}': {exc}") from None
    return intervals


def build_method(recipe: Recipe, num_tasks: int) -> LossMethod:
    """The multi-task method of the recipe across ``num_tasks`` clusters."""
    options = dict(recipe.method.model_extra or {})
    method = registry("method").build(recipe.method.name, num_tasks=num_tasks, **options)
    if not isinstance(method, LossMethod):
        raise AntError(
            f"method '{recipe.method.name}' built a {type(method).__name__}, not an "
            "ant.methods.LossMethod; the plugin providing it is incompatible with this ant"
        )
    return method


def build_optimizer(
    recipe: Recipe, model: nn.Module, method: LossMethod, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW over the model's trainable parameters plus the method's own parameter groups."""
    optim = recipe.optim
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [{"params": params}, *method.param_groups()],
        lr=optim.lr,
        betas=optim.betas,
        eps=optim.eps,
        weight_decay=optim.weight_decay,
        fused=device.type == "cuda",
    )


def timestep_sampling(recipe: Recipe, method: LossMethod) -> str:
    """``uniform`` for methods that ask for it (vanilla), else ``clustering.sampling``."""
    return "uniform" if method.timestep_sampling == "uniform" else recipe.clustering.sampling


def build_train_step(recipe: Recipe, ctx: DistContext) -> tuple[TrainStep, list[Interval]]:
    """Every part of a training step on ``ctx.device``, and the timestep clusters.

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
    intervals = build_intervals(recipe)
    method = build_method(recipe, len(intervals)).to(device)
    torch.manual_seed(recipe.train.seed * 1_000_003 + ctx.rank)
    sampling = timestep_sampling(recipe, method)
    if sampling == "stratified":
        check_stratified_batch(recipe.train.global_batch_size // ctx.world_size, len(intervals))
    step = TrainStep(
        model=model,
        ema=ema,
        diffusion=build_diffusion(recipe),
        method=method,
        clusters=ClusterTable.from_intervals(intervals, device),
        optimizer=build_optimizer(recipe, model, method, device),
        ema_decay=recipe.train.ema_decay,
        precision=recipe.train.precision,
        grad_clip=recipe.optim.grad_clip,
        sampling=sampling,
        conditional=recipe.model.num_classes > 0,
        world_size=ctx.world_size,
    )
    return step, intervals
