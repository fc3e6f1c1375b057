"""The DiT family (Peebles & Xie 2023), registered as ant models by name.

Names are ``DiT-<size>/<patch>``: the sizes of the paper's Table 1 and two small ones of ant's
own for CPU demos and tests, each with patch 2, 4 or 8.

============  =====  =====  =====  ==================================================
size          depth  width  heads  use
============  =====  =====  =====  ==================================================
S             12     384    6      paper, DiT-S (33.0M params as S/2 on 32×32×4)
B             12     768    12     paper, DiT-B (130.3M as B/2)
L             24     1024   16     paper, DiT-L (458.0M as L/2)
XL            28     1152   16     paper, DiT-XL (675.0M as XL/2)
T (Tiny)      6      256    4      CPU demos: ~7M params, e.g. 16×16×1 images
Micro         2      64     2      unit tests: ~0.2M params
============  =====  =====  =====  ==================================================

Each registered factory fixes the architecture named (depth, width, heads, patch, MLP ratio 4)
and takes the remaining :class:`~ant.models.dit.DiT` options as keyword arguments:
``input_size``, ``in_channels``, ``num_classes``, ``class_dropout``, ``learn_sigma``,
``freq_shift`` and ``routing`` (DTR, :mod:`ant.models.routing`). DiT is
imported only when a model is built, so loading the registry does not import timm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ant.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from ant.models.dit import DiT
    from ant.models.routing import RoutingSpec

# size -> (depth, hidden_size, num_heads)
DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
    "T": (6, 256, 4),
    "Micro": (2, 64, 2),
}
DIT_PATCH_SIZES: tuple[int, ...] = (2, 4, 8)
PAPER_SIZES = frozenset({"S", "B", "L", "XL"})


@dataclass(frozen=True)
class DiTFactory:
    """Build a DiT of one named architecture; the other DiT options are keyword arguments."""

    size: str
    depth: int
    hidden_size: int
    num_heads: int
    patch_size: int

    @property
    def name(self) -> str:
        """The registered name, ``DiT-<size>/<patch>``."""
        return f"DiT-{self.size}/{self.patch_size}"

    @property
    def description(self) -> str:
        """One line: the architecture and its source."""
        if self.size in PAPER_SIZES:
            source = "Peebles & Xie 2023"
        else:
            source = "small ant config after Peebles & Xie 2023"
        return (
            f"{self.name}: {self.depth} blocks, width {self.hidden_size}, {self.num_heads} heads, "
            f"patch {self.patch_size} ({source})"
        )

    def __call__(
        self,
        *,
        input_size: int = 32,
        in_channels: int = 4,
        num_classes: int = 1000,
        class_dropout: float = 0.1,
        learn_sigma: bool = True,
        freq_shift: float = 0.0,
        routing: RoutingSpec | None = None,
    ) -> DiT:
        """A freshly initialised DiT of this architecture."""
        from ant.models.dit import DiT

        return DiT(
            input_size=input_size,
            patch_size=self.patch_size,
            in_channels=in_channels,
            hidden_size=self.hidden_size,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=4.0,
            class_dropout=class_dropout,
            num_classes=num_classes,
            learn_sigma=learn_sigma,
            freq_shift=freq_shift,
            routing=routing,
        )


DIT_CONFIGS: dict[str, DiTFactory] = {
    factory.name: factory
    for factory in (
        DiTFactory(size, depth, width, heads, patch)
        for size, (depth, width, heads) in DIT_SIZES.items()
        for patch in DIT_PATCH_SIZES
    )
}


@hookimpl
def ant_register_models(register: Any) -> None:
    """Register every named DiT configuration."""
    for name, factory in DIT_CONFIGS.items():
        register(name, factory, factory.description)
