"""ant-gls: the Geometric Loss Strategy as an ant method plugin.

Registered through the ``ant`` entry-point group (see ``pyproject.toml``); ant discovers it at
start-up, and ``method: {name: gls}`` in a recipe selects it. The method is registered as an
``ant.Lazy`` factory: :mod:`ant_gls.strategy` (and torch) is imported only when a recipe builds
it, so installing the plugin does not slow down ``ant --help`` or ``ant plugins``.
"""

from __future__ import annotations

from typing import Any

import ant


@ant.hookimpl
def ant_register_methods(register: Any) -> None:
    register("gls", ant.Lazy("ant_gls.strategy", "GeometricLossStrategy"))
