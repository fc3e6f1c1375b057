"""Checks that need the plugin registries: component names and component options."""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any

import pydantic

from ant.core.errors import AntError
from ant.core.plugins import registry
from ant.core.registry import Entry, closest, resolve
from ant.recipe.loader import RawRecipe
from ant.recipe.schema import PluginSection, Recipe

# Options the trainer passes to each kind of component itself; a recipe cannot set them as extras.
INJECTED: dict[str, frozenset[str]] = {
    "model": frozenset({"learn_sigma"}),
    "objective": frozenset(),
    "method": frozenset({"num_tasks"}),
    "weighting": frozenset(),
    "logger": frozenset({"run_dir", "start_step", "config"}),
}

# Where a name of the other kind belongs: a weighting named as method.name, and the reverse.
MISPLACED: dict[str, tuple[str, str]] = {
    "method": ("weighting", "weighting.name"),
    "weighting": ("method", "method.name"),
}


def _type_hints(factory: Any) -> dict[str, Any]:
    target = resolve(factory)
    target = target.func if isinstance(target, functools.partial) else target
    target = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(target)
    except Exception:
        return {}


def check_options(
    entry: Entry, section: PluginSection, key: str, raw: RawRecipe, injected: frozenset[str]
) -> None:
    """Check and coerce the extra keys of ``section`` against ``entry``'s factory signature."""
    extras = section.model_extra or {}
    if not extras:
        return
    params = entry.parameters()
    allowed = set(params) - injected - set(type(section).model_fields)
    hints = _type_hints(entry.factory)
    for option, value in extras.items():
        path = f"{key}.{option}"
        source = raw.source_of(path.split("."))
        if option not in allowed and not entry.accepts_any_option():
            choices = sorted(allowed | set(type(section).model_fields))
            guess = closest(option, choices)
            hint = f"did you mean '{guess}'?" if guess else f"valid keys: {', '.join(choices)}"
            raise AntError(
                f"{source}: {path}: unknown option of {entry.kind} '{entry.name}'; {hint}"
            )
        if option in hints:
            try:
                extras[option] = pydantic.TypeAdapter(hints[option]).validate_python(value)
            except pydantic.ValidationError as exc:
                message = exc.errors()[0]["msg"]
                raise AntError(
                    f"{source}: {path}: {message[:1].lower() + message[1:]}, got {value!r}"
                ) from None


def _entry(kind: str, name: str, key: str, raw: RawRecipe) -> Entry:
    source = raw.source_of(key.split("."))
    other = MISPLACED.get(kind)
    if other is not None and name not in registry(kind) and name in registry(other[0]):
        raise AntError(
            f"{source}: {key}: '{name}' is a {other[0]}, not a {kind}: set {other[1]}={name} "
            f"(`ant plugins --kind {other[0]}` lists them)"
        )
    try:
        return registry(kind).get(name)
    except AntError as exc:
        raise AntError(f"{source}: {key}: {exc}") from None


def check_plugins(recipe: Recipe, raw: RawRecipe) -> None:
    """Every component the recipe names exists, and its options fit its signature."""
    model = _entry("model", recipe.model.name, "model.name", raw)
    check_options(model, recipe.model, "model", raw, INJECTED["model"])
    if recipe.model.routing is not None and "routing" not in model.parameters():
        raise AntError(
            f"{raw.source_of(['model', 'routing'])}: model.routing: model '{recipe.model.name}' "
            "has no task routing (DTR routes the channels of DiT blocks, docs/models.md): use a "
            "DiT, or set model.routing=null"
        )
    objective = _entry("objective", recipe.clustering.objective, "clustering.objective", raw)
    check_options(objective, recipe.clustering, "clustering", raw, INJECTED["objective"])
    method = _entry("method", recipe.method.name, "method.name", raw)
    check_options(method, recipe.method, "method", raw, INJECTED["method"])
    if recipe.weighting.name != "none":
        weighting = _entry("weighting", recipe.weighting.name, "weighting.name", raw)
        check_options(weighting, recipe.weighting, "weighting", raw, INJECTED["weighting"])
    for index, entry in enumerate(recipe.train.loggers):
        key = f"train.loggers.{index}"
        if isinstance(entry, str):
            _entry("logger", entry, key, raw)
        else:
            found = _entry("logger", entry.name, key, raw)
            check_options(found, entry, key, raw, INJECTED["logger"])
    check_vae(recipe, raw)


def check_vae(recipe: Recipe, raw: RawRecipe) -> None:
    """A latent recipe (``vae.name_or_path`` set) must not clip its samples to [-1, 1]."""
    if recipe.vae.name_or_path is not None and recipe.sample.clip_x0:
        raise AntError(
            f"{raw.source_of(['sample', 'clip_x0'])}: sample.clip_x0: latents are not confined "
            "to [-1, 1], so clipping them distorts the samples: set sample.clip_x0=false with a vae"
        )
