"""The layers of ant (pyproject.toml's import contract) as a process meets them."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import click
import pytest

from ant.cli import LazyCommand, cli
from ant.core.registry import Lazy
from ant.methods.base import LossMethod

from .helpers import REPO

IMPORT_EVERY_TRAINING_MODULE = """
import pkgutil, importlib, sys
import ant.training
for module in pkgutil.walk_packages(ant.training.__path__, "ant.training."):
    importlib.import_module(module.name)
above = sorted(name for name in sys.modules
               if name.split(".")[:2] in (["ant", "evaluation"], ["ant", "experiments"],
                                           ["ant", "cli"]))
print(" ".join(above))
"""


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_training_loads_nothing_of_evaluation_experiments_or_the_cli() -> None:
    assert _python(IMPORT_EVERY_TRAINING_MODULE) == ""


# Runs an ant command in-process and prints the heavy libraries it imported.
RUN_COMMAND = """
import sys
from ant.cli import cli
try:
    cli(sys.argv[1:], prog_name="ant", standalone_mode=False)
except SystemExit:
    pass
heavy = ("torch", "timm", "torch_fidelity", "webdataset", "cvxpy")
print("imported:", *(name for name in heavy if name in sys.modules), file=sys.stderr)
"""

FAST_COMMANDS = [
    ["--help"],
    ["plugins"],
    ["plugins", "--kind", "method"],
    ["recipes"],
    ["recipe", "show", "recipes/digits_dit.yaml"],
    ["cluster", "--help"],
    ["train", "--help"],
    ["data", "--help"],
    ["analyze", "--help"],
]


@pytest.mark.parametrize("args", FAST_COMMANDS, ids=" ".join)
def test_listing_and_help_commands_import_no_torch(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUN_COMMAND, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    imported = done.stderr.rstrip("\n").rsplit("\n", 1)[-1]
    assert imported == "imported:", f"ant {' '.join(args)} {imported}"


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Group, str]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((f"{prefix}{name}", group, name))
        real = command.load() if isinstance(command, LazyCommand) else command
        if isinstance(real, click.Group):
            found.extend(_commands(real, f"{prefix}{name} "))
    return found


def test_a_lazy_command_lists_the_help_its_command_prints() -> None:
    cli.load_plugin_commands()
    listed = _commands(cli)
    assert {"train", "analyze ntg", "data encode", "recipe validate"} <= {n for n, _, _ in listed}
    for name, group, key in listed:
        command = group.commands[key]
        if not isinstance(command, LazyCommand):
            continue
        real = command.load()
        assert real.name == key, name
        assert command.help == inspect.cleandoc(real.help or ""), name
        for limit in (45, 80):
            assert command.get_short_help_str(limit) == real.get_short_help_str(limit), name


def test_lazy_reads_the_docstring_without_importing_and_builds_on_call() -> None:
    lazy = Lazy("ant.methods.uncertainty", "UncertaintyWeighting")
    code = (
        "import sys; from ant.core.registry import Lazy; "
        "print(Lazy('ant.methods.uncertainty', 'UncertaintyWeighting').doc_line()); "
        "print('torch' in sys.modules)"
    )
    line, imported = _python(code).splitlines()
    assert line.startswith("Uncertainty Weighting") and imported == "False"
    assert line == inspect.getdoc(lazy.target()).splitlines()[0]
    method = lazy(num_tasks=3)
    assert type(method).__name__ == "UncertaintyWeighting" and method.num_tasks == 3
    # A name the module re-exports rather than defines is read by importing it.
    assert (
        Lazy("ant.methods", "LossMethod").doc_line() == inspect.getdoc(LossMethod).splitlines()[0]
    )


@pytest.mark.parametrize("package", ["ant.data", "ant.diffusion", "ant.methods", "ant.clustering"])
def test_every_lazy_export_resolves_and_none_is_shadowed_by_a_sub_module(package: str) -> None:
    module = importlib.import_module(package)
    sub_modules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    assert not set(module.__all__) & sub_modules
    for name in module.__all__:
        value = getattr(module, name)
        assert not inspect.ismodule(value), f"{package}.{name}"
    with pytest.raises(AttributeError):
        _ = module.no_such_name
