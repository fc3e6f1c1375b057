"""The public entry points of recipes: load, dump, list, and write into a run directory."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ant.atomic import atomic_write
from ant.errors import AntError
from ant.recipes.loader import build_recipe, load_raw, recipe_dirs
from ant.recipes.schema import Recipe
from ant.recipes.validate import check_plugins
from ant.recipes.yaml_io import dump_yaml, parse_yaml

RESOLVED_RECIPE = "recipe.yaml"


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
