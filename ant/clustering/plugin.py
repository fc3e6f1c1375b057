"""Built-in clustering objectives and ``ant cluster``, registered through the plugin hooks."""

from __future__ import annotations

from typing import Any

from ant.clustering.objectives import (
    GradientObjective,
    SNRObjective,
    TimestepObjective,
    UniformObjective,
)
from ant.core.hookspecs import hookimpl


@hookimpl
def ant_register_objectives(register: Any) -> None:
    register("uniform", UniformObjective)
    register("timestep", TimestepObjective)
    register("snr", SNRObjective)
    register("gradient", GradientObjective)
