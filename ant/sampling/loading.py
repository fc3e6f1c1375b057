"""A trained model ready to sample: checkpoint, recipe, network, weights and diffusion."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydantic
from torch import nn

from ant.diffusion import GaussianDiffusion
from ant.errors import AntError
from ant.recipes import Recipe
from ant.training.build import build_diffusion, build_model
from ant.training.checkpoint import load_checkpoint

MAX_DETAIL = 300


@dataclass(frozen=True)
class SamplingModel:
    """A model with its checkpoint's weights, its diffusion and where it came from."""

    model: nn.Module
    diffusion: GaussianDiffusion
    recipe: Recipe
    step: int
    weights: str
    """``EMA`` or ``raw``: which weights of the checkpoint the model holds."""


def load_sampling_model(checkpoint: str | Path, *, raw_weights: bool = False) -> SamplingModel:
    """Rebuild the model of ``checkpoint`` (a file, or a run directory: its latest checkpoint).

    The model gets the EMA weights, or the trained weights with ``raw_weights``, and stays on
    the CPU. Every problem with the checkpoint raises :class:`AntError`.
    """
    state = load_checkpoint(checkpoint)
    try:
        recipe = Recipe.model_validate(state["recipe"])
    except pydantic.ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "recipe"
        raise AntError(
            f"{checkpoint}: its recipe does not fit this ant ({where}: {problem['msg']})"
        ) from None
    key, weights = ("model", "raw") if raw_weights else ("ema", "EMA")
    if key not in state:
        raise AntError(f"{checkpoint} has no EMA weights; use --raw-weights")
    model = build_model(recipe)
    try:
        model.load_state_dict(state[key])
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:MAX_DETAIL] or type(exc).__name__
        raise AntError(
            f"{checkpoint}: the {weights} weights do not fit model '{recipe.model.name}' ({detail})"
        ) from None
    return SamplingModel(
        model=model,
        diffusion=build_diffusion(recipe),
        recipe=recipe,
        step=int(state.get("step", 0)),
        weights=weights,
    )
