"""Built-in cluster methods and timestep weightings, registered through the same hooks as
third-party ones."""

from __future__ import annotations

from typing import Any

from ant.core.hookspecs import hookimpl
from ant.methods.cagrad import CAGrad
from ant.methods.debias import Debias
from ant.methods.dwa import DWA
from ant.methods.edm2 import EDM2Uncertainty
from ant.methods.famo import FAMO
from ant.methods.imtl import IMTL
from ant.methods.minsnr import MinSNR
from ant.methods.nashmtl import NashMTL
from ant.methods.p2 import P2
from ant.methods.pcgrad import PCGrad
from ant.methods.rlw import RLW
from ant.methods.uncertainty import UncertaintyWeighting
from ant.methods.vanilla import Vanilla


@hookimpl
def ant_register_methods(register: Any) -> None:
    register("vanilla", Vanilla)
    register("uw", UncertaintyWeighting)
    register("pcgrad", PCGrad)
    register("cagrad", CAGrad)
    register("imtl", IMTL)
    register("nashmtl", NashMTL)
    register("famo", FAMO)
    register("dwa", DWA)
    register("rlw", RLW)


@hookimpl
def ant_register_weightings(register: Any) -> None:
    register("minsnr", MinSNR)
    register("p2", P2)
    register("debias", Debias)
    register("edm2_uncertainty", EDM2Uncertainty)
