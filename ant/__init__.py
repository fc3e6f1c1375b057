"""ant: training diffusion models as multi-task learners (ANT, Go et al., NeurIPS 2023)."""

__version__ = "0.1.0"

from ant.core.hookspecs import hookimpl
from ant.core.registry import Lazy

__all__ = ["Lazy", "__version__", "hookimpl"]
