"""The layers of ant (pyproject.toml's import contract) as a process meets them."""

from __future__ import annotations

import subprocess
import sys

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
