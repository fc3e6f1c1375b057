"""YAML recipes: inheritance, overrides, a typed schema, and the resolved copy in each run."""

from ant.recipe.io import (
    dump_recipe,
    list_recipes,
    load_recipe,
    record_recipe,
    write_resolved_recipe,
)
from ant.recipe.schema import Recipe

__all__ = [
    "Recipe",
    "dump_recipe",
    "list_recipes",
    "load_recipe",
    "record_recipe",
    "write_resolved_recipe",
]
