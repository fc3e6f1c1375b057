"""Built-in clustering objectives, registered through the plugin hook."""

from __future__ import annotations

from typing import Any

from ant.clustering.objectives import UniformObjective
from ant.plugins.hookspecs import hookimpl


@hookimpl
def ant_register_objectives(register: Any) -> None:
    register("uniform", UniformObjective)
