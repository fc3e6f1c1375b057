"""The built-in data sources and the ``ant data`` commands, registered through the plugin hooks."""

from __future__ import annotations

from typing import Any

from ant.core.hookspecs import hookimpl
from ant.data.sources import DigitsSource, FolderSource, NpzSource


@hookimpl
def ant_register_data_sources(register: Any) -> None:
    register("digits", DigitsSource)
    register("folder", FolderSource)
    register("npz", NpzSource)
