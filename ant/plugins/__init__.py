"""Plugin system: pluggy hooks, entry points in group ``ant``, and lazy registries."""

from ant.plugins.hookspecs import hookimpl, hookspec
from ant.plugins.manager import (
    KINDS,
    build_plugin_manager,
    collect,
    get_plugin_manager,
    registry,
)
from ant.plugins.registry import Entry, Registry

__all__ = [
    "KINDS",
    "Entry",
    "Registry",
    "build_plugin_manager",
    "collect",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "registry",
]
