"""Build the parts of a run (model, diffusion, clusters, method) from a resolved recipe."""

from __future__ import annotations

from torch import nn

from ant.clustering import Interval, validate_intervals
from ant.diffusion import GaussianDiffusion
from ant.errors import AntError
from ant.methods import LossMethod
from ant.plugins import registry
from ant.recipes import Recipe


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
