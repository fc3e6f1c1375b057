"""``ant plugins``: what is installed, of which kind, from which distribution, and (with
``--options``) the keys a recipe can set for it."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from ant.core.plugins import KINDS, registry
from ant.core.registry import Entry
from ant.recipe.validate import INJECTED

COMMAND_KIND = "command"


def plugin_rows(
    cli: click.Group, kind: str | None, with_options: bool = False
) -> list[dict[str, str]]:
    """One row per registered component (and per plugin command) of ``kind`` or of every kind;
    ``with_options`` adds the recipe options of each (importing every component to read them)."""
    rows: list[dict[str, str]] = []
    for each in sorted(KINDS):
        if kind not in (None, each):
            continue
        rows.extend(
            {
                "kind": each,
                "name": entry.name,
                "distribution": entry.distribution,
                "description": entry.description,
                **({"options": options(entry, each)} if with_options else {}),
            }
            for entry in registry(each)
        )
    if kind in (None, COMMAND_KIND):
        providers: dict[str, str] = getattr(cli, "providers", {})
        for name in sorted(providers):
            command = cli.commands[name]
            rows.append(
                {
                    "kind": COMMAND_KIND,
                    "name": name,
                    "distribution": providers[name],
                    "description": command.get_short_help_str(limit=80),
                    **({"options": ""} if with_options else {}),
                }
            )
    return rows


def options(entry: Entry, kind: str) -> str:
    """The keys a recipe can set for ``entry`` (its factory's keyword options, less those ant
    passes itself), or ``any`` for a factory that takes ``**kwargs``."""
    if entry.accepts_any_option():
        return "any"
    injected = INJECTED.get(kind, frozenset())
    return ", ".join(name for name in entry.parameters() if name not in injected)


@click.command("plugins")
@click.option(
    "--kind",
    type=click.Choice(sorted([*KINDS, COMMAND_KIND])),
    help="Only components of this kind.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--options",
    "with_options",
    is_flag=True,
    help="Also list the keys a recipe can set for each component (imports every component).",
)
@click.pass_context
def plugins_command(
    ctx: click.Context, kind: str | None, as_json: bool, with_options: bool
) -> None:
    """List installed components: kind, name, distribution, description (and recipe options)."""
    root = ctx.find_root().command
    assert isinstance(root, click.Group)
    rows = plugin_rows(root, kind, with_options)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    columns = ["kind", "name", "distribution", "description"] + (
        ["options"] if with_options else []
    )
    table = Table(title="ant plugins")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(row[key] for key in columns))
    Console().print(table)
