"""The plugin manager: built-in plugins and third-party entry points, through the same hooks."""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import click
import pluggy

from ant.core import hookspecs
from ant.core.errors import AntError
from ant.core.hookspecs import hookimpl, hookspec
from ant.core.registry import Entry, Registry

ENTRY_POINT_GROUP = "ant"
AUTOLOAD_ENV = "ANT_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_DISTRIBUTION = "ant-diffusion"

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

# Ant's own components register through the same hooks as any third-party plugin. They are
# named, not imported: the manager imports them when it is built, so this bottom layer depends
# on none of them.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "ant.models.plugin",
    "ant.models.adm_plugin",
    "ant.methods.plugin",
    "ant.clustering.plugin",
    "ant.data.plugin",
    "ant.evaluation.plugin",
    "ant.core.trackers",
    "ant.cli.commands",
)

# Component kind -> the hook that fills its registry.
KINDS: dict[str, str] = {
    "model": "ant_register_models",
    "objective": "ant_register_objectives",
    "method": "ant_register_methods",
    "weighting": "ant_register_weightings",
    "data_source": "ant_register_data_sources",
    "metric": "ant_register_metrics",
    "extractor": "ant_register_extractors",
    "logger": "ant_register_loggers",
}


@dataclass(frozen=True)
class LoadedPlugin:
    """A plugin module or object known to the manager, and the distribution providing it."""

    name: str
    distribution: str


class AntPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers which distribution provides each plugin."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.distributions: dict[str, str] = {}

    def register_from(self, plugin: object, name: str, distribution: str) -> None:
        """Register ``plugin`` under ``name`` as provided by ``distribution``."""
        self.register(plugin, name=name)
        self.distributions[name] = distribution

    def distribution_of(self, plugin_name: str) -> str:
        """The distribution that provides the plugin called ``plugin_name``."""
        return self.distributions.get(plugin_name, "?")

    def loaded(self) -> list[LoadedPlugin]:
        """Every registered plugin with its distribution."""
        return [
            LoadedPlugin(name=name, distribution=self.distribution_of(name))
            for name, _ in self.list_name_plugin()
        ]


def _load_builtin(manager: AntPluginManager) -> None:
    for module_name in DEFAULT_PLUGINS:
        module: ModuleType = importlib.import_module(module_name)
        manager.register_from(module, module_name, BUILTIN_DISTRIBUTION)


def _load_entry_points(manager: AntPluginManager) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        if manager.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise AntError(
                f"plugin '{ep.name}' from {dist} failed to load ({type(exc).__name__}: {exc}); "
                f"reinstall or uninstall {dist}, or set {AUTOLOAD_ENV}=1"
            ) from exc
        manager.register_from(plugin, ep.name, dist)


def build_plugin_manager(
    autoload: bool | None = None, extra: Iterable[tuple[object, str, str]] = ()
) -> AntPluginManager:
    """A fresh manager with the built-in plugins, entry points unless disabled, and ``extra``.

    ``autoload=None`` follows the ``ANT_DISABLE_PLUGIN_AUTOLOAD`` environment variable.
    ``extra`` holds ``(plugin, name, distribution)`` triples (used by tests and embedding code).
    """
    manager = AntPluginManager()
    _load_builtin(manager)
    if autoload is None:
        autoload = os.environ.get(AUTOLOAD_ENV, "") in ("", "0")
    if autoload:
        _load_entry_points(manager)
    for plugin, name, distribution in extra:
        manager.register_from(plugin, name, distribution)
    return manager


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> AntPluginManager:
    """The process-wide plugin manager (built once)."""
    return build_plugin_manager()


def collect(manager: AntPluginManager, kind: str) -> Registry:
    """Call every plugin's registration hook for ``kind`` and return the filled registry."""
    if kind not in KINDS:
        raise AntError(f"unknown plugin kind '{kind}': available: {', '.join(sorted(KINDS))}")
    registry = Registry(kind)
    hook = getattr(manager.hook, KINDS[kind])
    for impl in reversed(hook.get_hookimpls()):
        distribution = manager.distribution_of(impl.plugin_name)

        def register(
            name: str,
            factory: Callable[..., Any],
            description: str | None = None,
            *,
            _plugin: str = impl.plugin_name,
            _dist: str = distribution,
        ) -> None:
            registry.add(name, factory, description, plugin=_plugin, distribution=_dist)

        impl.function(register=register)
    return registry


@functools.cache
def registry(kind: str) -> Registry:
    """The registry of ``kind`` from the process-wide manager (built on first use)."""
    return collect(get_plugin_manager(), kind)


def add_commands(manager: AntPluginManager, cli: click.Group) -> dict[str, str]:
    """Let every plugin add sub-commands to ``cli``; returns command name -> distribution."""
    providers: dict[str, str] = {}
    for impl in reversed(manager.hook.ant_register_commands.get_hookimpls()):
        before = set(cli.commands)
        impl.function(cli=cli)
        for name in set(cli.commands) - before:
            providers[name] = manager.distribution_of(impl.plugin_name)
    return providers
