"""The built-in data sources and the ``ant data`` commands, registered through the plugin hooks."""

from __future__ import annotations

from typing import Any

from ant.core.hookspecs import hookimpl
from ant.core.registry import Lazy

SOURCES = "ant.data.sources"


@hookimpl
def ant_register_data_sources(register: Any) -> None:
    register("digits", Lazy(SOURCES, "DigitsSource"))
    register("folder", Lazy(SOURCES, "FolderSource"))
    register("npz", Lazy(SOURCES, "NpzSource"))
