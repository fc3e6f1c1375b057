"""Multi-task methods across timestep clusters and per-timestep loss weightings.

The base classes are imported from :mod:`ant.methods.base` on first access, so importing this
package (as plugin registration does) imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ant.core.registry import lazy_exports

if TYPE_CHECKING:
    from ant.methods.base import GradientMethod, LossMethod, Method, TimestepWeighting

__all__ = ["GradientMethod", "LossMethod", "Method", "TimestepWeighting"]

__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "base"))
