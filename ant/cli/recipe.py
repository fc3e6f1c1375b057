"""``ant recipe show|validate`` and ``ant recipes``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ant.cli.options import OVERRIDE_SETTINGS
from ant.recipe.io import dump_recipe, list_recipes, load_recipe, recipe_description


@click.group("recipe")
def recipe_group() -> None:
    """Inspect and check YAML recipes."""


@recipe_group.command("show", context_settings=OVERRIDE_SETTINGS)
@click.argument("recipe")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def show_command(recipe: str, overrides: tuple[str, ...]) -> None:
    """Print RECIPE fully resolved: bases merged, overrides applied, defaults filled in.

    RECIPE is a file or the name of a shipped recipe; KEY=VALUE overrides follow it, with
    dotted keys and YAML values (e.g. optim.lr=1e-4 train.steps=100).
    """
    click.echo(dump_recipe(load_recipe(recipe, overrides)), nl=False)


@recipe_group.command("validate", context_settings=OVERRIDE_SETTINGS)
@click.argument("recipe")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def validate_command(recipe: str, overrides: tuple[str, ...]) -> None:
    """Check RECIPE as `ant train` would before its first step (exit code 2 if invalid).

    The schema, the installed plugins, the clusters, the method, the batch split and the
    model against the data's meta.json; what needs the world size or the VAE is named.
    KEY=VALUE overrides follow RECIPE, as for `ant recipe show`.
    """
    from ant.recipe.build import plan_run
    from ant.recipe.preflight import check_data

    resolved = load_recipe(recipe, overrides)
    notes = plan_run(resolved, None).checked.notes + check_data(resolved, training=False)
    click.echo(f"{recipe}: valid (model {resolved.model.name}, method {resolved.method.name})")
    for note in notes:
        click.echo(f"  note: {note}")


@click.command("recipes")
@click.option("--paths", is_flag=True, help="Also show where each recipe file is.")
def recipes_command(paths: bool) -> None:
    """List the named recipes with a one-line description each."""
    table = Table(title="ant recipes")
    table.add_column("recipe")
    table.add_column("description", overflow="fold")
    if paths:
        table.add_column("path", overflow="fold")
    for name, path in list_recipes():
        row = [name, recipe_description(path)]
        if paths:
            row.append(str(Path(path)))
        table.add_row(*row)
    Console().print(table)
