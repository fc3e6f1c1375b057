"""Denoising networks: the DiT family (Peebles & Xie 2023).

``DiT`` is imported on first access (it pulls in timm); the named configurations live in
:mod:`ant.models.plugin` and are built through the model registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ant.models.plugin import DIT_CONFIGS, DiTFactory

if TYPE_CHECKING:
    from ant.models.dit import DiT

__all__ = ["DIT_CONFIGS", "DiT", "DiTFactory"]


def __getattr__(name: str) -> Any:
    if name == "DiT":
        from ant.models.dit import DiT

        return DiT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
