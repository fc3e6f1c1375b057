"""Built-in methods, registered through the same hook as third-party ones."""

from __future__ import annotations

from typing import Any

from ant.methods.uncertainty import UncertaintyWeighting
from ant.methods.vanilla import Vanilla
from ant.plugins.hookspecs import hookimpl


@hookimpl
def ant_register_methods(register: Any) -> None:
    register("vanilla", Vanilla)
    register("uw", UncertaintyWeighting)
