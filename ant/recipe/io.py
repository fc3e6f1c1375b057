"""The public entry points of recipes: load, dump, list, and write into a run directory."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ant.core.atomic import atomic_write
from ant.core.errors import AntError
from ant.recipe.loader import build_recipe, load_raw, recipe_dirs
from ant.recipe.schema import Recipe
from ant.recipe.validate import check_plugins
from ant.recipe.yaml_io import dump_yaml, parse_yaml

RESOLVED_RECIPE = "recipe.yaml"

logger = logging.getLogger(__name__)


def load_recipe(spec: str, overrides: Iterable[str] = (), *, check: bool = True) -> Recipe:
    """Load, merge, override and validate a recipe (a path or the name of a shipped recipe).

    With ``check`` the component names and options are checked against the plugin registries.
    Bad input raises :class:`AntError` with one line naming the file, the key and the problem.
    """
    raw = load_raw(spec, overrides)
    recipe = build_recipe(raw)
    if check:
        check_plugins(recipe, raw)
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe (defaults filled in) as YAML."""
    return dump_yaml(recipe.model_dump(mode="json"))


def record_recipe(recipe: Recipe, run_dir: Path, step: int) -> Path | None:
    """Keep ``RUN_DIR/recipe.yaml`` as the recipe the run started with (written once), and record
    a resume with other settings as ``RUN_DIR/recipe-step-NNNNNNN.yaml``, logging the keys that
    changed; returns the file written, if any."""
    original = run_dir / RESOLVED_RECIPE
    if not original.is_file():
        return write_resolved_recipe(recipe, run_dir)
    before = parse_yaml(original.read_text(encoding="utf-8"), str(original))
    changed = changed_keys(before, recipe.model_dump(mode="json"))
    if not changed:
        return None
    target = run_dir / f"recipe-step-{step:07d}.yaml"
    with atomic_write(target, text=True) as handle:
        handle.write(dump_recipe(recipe))
    shown = ", ".join(changed[:6]) + (", ..." if len(changed) > 6 else "")
    logger.warning(
        "resuming at step %d with settings other than recipe.yaml's (%s): recorded in %s",
        step,
        shown,
        target.name,
    )
    return target


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys where two nested recipe mappings differ.

    >>> changed_keys({"optim": {"lr": 1e-4, "eps": 1e-8}}, {"optim": {"lr": 5e-5, "eps": 1e-8}})
    ['optim.lr']
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out.extend(changed_keys(old.get(key), new.get(key), f"{prefix}{key}."))
        return out
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        old, new = list(old), list(new)
    return [] if old == new else [prefix.rstrip(".")]


def write_resolved_recipe(recipe: Recipe, run_dir: str | Path) -> Path:
    """Write the resolved recipe to ``RUN_DIR/recipe.yaml`` atomically; return its path."""
    directory = Path(run_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AntError(f"cannot create run directory {directory}: {exc.strerror}") from None
    target = directory / RESOLVED_RECIPE
    with atomic_write(target, text=True) as handle:
        handle.write(dump_recipe(recipe))
    return target


def recipe_description(path: Path) -> str:
    """The one-line ``description`` of a recipe file, following ``base:`` when it has none."""
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except (AntError, OSError) as exc:
        return f"(unreadable: {exc})"
    if not isinstance(data, dict):
        return "(not a recipe)"
    description = data.get("description")
    if description:
        return str(description).strip().splitlines()[0]
    base = data.get("base")
    if isinstance(base, str) and (path.parent / base).is_file():
        return recipe_description(path.parent / base)
    return ""


def list_recipes() -> list[tuple[str, Path]]:
    """Named recipes (name, path); a recipe in an earlier directory hides a later namesake."""
    found: dict[str, Path] = {}
    for directory in recipe_dirs():
        for path in sorted(directory.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return sorted(found.items())
