"""Built-in clustering objectives and ``ant cluster``, registered through the plugin hooks."""

from __future__ import annotations

from typing import Any

from ant.core.hookspecs import hookimpl
from ant.core.registry import Lazy

OBJECTIVES = "ant.clustering.objectives"


@hookimpl
def ant_register_objectives(register: Any) -> None:
    register("uniform", Lazy(OBJECTIVES, "UniformObjective"))
    register("timestep", Lazy(OBJECTIVES, "TimestepObjective"))
    register("snr", Lazy(OBJECTIVES, "SNRObjective"))
    register("gradient", Lazy(OBJECTIVES, "GradientObjective"))
