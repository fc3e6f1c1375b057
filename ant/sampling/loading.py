"""A trained model ready to sample: checkpoint, recipe, network, weights and diffusion."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydantic
from torch import nn

from ant.core.checkpoint import load_checkpoint
from ant.core.errors import AntError
from ant.diffusion import GaussianDiffusion
from ant.recipe import Recipe
from ant.recipe.build import build_diffusion, build_model
from ant.recipe.loader import RawRecipe, apply_overrides, build_recipe

SAMPLING_SECTIONS = ("sample", "eval")
"""The recipe sections a trained model's ``KEY=VALUE`` overrides may change."""

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


def with_overrides(stored: dict[str, object], overrides: Sequence[str]) -> Recipe:
    """A checkpoint's recipe with ``KEY=VALUE`` overrides of its ``sample`` and ``eval`` sections,
    through the loader ``ant train`` uses (the same parsing, provenance and one-line errors)."""
    for item in overrides:
        section = item.partition("=")[0].strip().split(".")[0]
        if "=" in item and section not in SAMPLING_SECTIONS:
            raise AntError(
                f"override '{item}': a trained model's {section} cannot change; only "
                f"{' and '.join(f'{name}.*' for name in SAMPLING_SECTIONS)} keys can be set here"
            )
    raw = RawRecipe(data=copy.deepcopy(stored))
    apply_overrides(raw, overrides)
    return build_recipe(raw)


def load_sampling_model(
    checkpoint: str | Path, *, raw_weights: bool = False, overrides: Sequence[str] = ()
) -> SamplingModel:
    """Rebuild the model of ``checkpoint`` (a file, or a run directory: its latest checkpoint).

    The model gets the EMA weights, or the trained weights with ``raw_weights``, and stays on
    the CPU; ``overrides`` (``sample.cfg_scale=2``) change the recipe's sample and eval sections.
    Every problem with the checkpoint raises :class:`AntError`.
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
    if overrides:
        recipe = with_overrides(state["recipe"], overrides)
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
