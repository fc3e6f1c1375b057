"""The hook specifications of ant: one registration hook per component kind.

Every hook receives a ``register`` callback (the pattern of simonw/llm), so a plugin adds any
number of components without importing ant internals::

    import ant

    @ant.hookimpl
    def ant_register_methods(register):
        register("my-method", MyMethod, "one-line description")

``register(name, factory, description=None)``: ``factory`` is a class or a callable that builds
the component from recipe options; it is called only when a recipe asks for ``name``. The
description defaults to the first line of the factory's docstring.
"""

from __future__ import annotations

from typing import Any

import click
import pluggy

PROJECT_NAME = "ant"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def ant_register_models(register: Any) -> None:
    """Register denoising networks (``model.name`` in a recipe)."""


@hookspec
def ant_register_objectives(register: Any) -> None:
    """Register interval-clustering objectives (``clustering.objective`` in a recipe)."""


@hookspec
def ant_register_methods(register: Any) -> None:
    """Register multi-task methods across clusters (``method.name`` in a recipe)."""


@hookspec
def ant_register_weightings(register: Any) -> None:
    """Register per-timestep loss weightings (``weighting.name`` in a recipe)."""


@hookspec
def ant_register_data_sources(register: Any) -> None:
    """Register data sources for ``ant data pack SOURCE``."""


@hookspec
def ant_register_metrics(register: Any) -> None:
    """Register metrics for ``ant eval`` (``eval.metrics`` in a recipe)."""


@hookspec
def ant_register_extractors(register: Any) -> None:
    """Register feature extractors for the metrics (``eval.feature_extractor`` in a recipe)."""


@hookspec
def ant_register_loggers(register: Any) -> None:
    """Register run loggers and experiment trackers (``train.loggers`` in a recipe)."""


@hookspec
def ant_register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``ant`` command line."""
