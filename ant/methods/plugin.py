"""Built-in cluster methods and timestep weightings, registered through the same hooks as
third-party ones.

The registry holds :class:`~ant.core.registry.Lazy` factories: a method's module (and torch) is
imported when the method is built, not when the registry is listed.
"""

from __future__ import annotations

from typing import Any

from ant.core.hookspecs import hookimpl
from ant.core.registry import Lazy


@hookimpl
def ant_register_methods(register: Any) -> None:
    register("vanilla", Lazy("ant.methods.vanilla", "Vanilla"))
    register("uw", Lazy("ant.methods.uncertainty", "UncertaintyWeighting"))
    register("pcgrad", Lazy("ant.methods.pcgrad", "PCGrad"))
    register("cagrad", Lazy("ant.methods.cagrad", "CAGrad"))
    register("imtl", Lazy("ant.methods.imtl", "IMTL"))
    register("nashmtl", Lazy("ant.methods.nashmtl", "NashMTL"))
    register("famo", Lazy("ant.methods.famo", "FAMO"))
    register("dwa", Lazy("ant.methods.dwa", "DWA"))
    register("rlw", Lazy("ant.methods.rlw", "RLW"))


@hookimpl
def ant_register_weightings(register: Any) -> None:
    register("minsnr", Lazy("ant.methods.minsnr", "MinSNR"))
    register("p2", Lazy("ant.methods.p2", "P2"))
    register("debias", Lazy("ant.methods.debias", "Debias"))
    register("edm2_uncertainty", Lazy("ant.methods.edm2", "EDM2Uncertainty"))
