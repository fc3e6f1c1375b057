"""ant: training diffusion models as multi-task learners (ANT, Go et al., NeurIPS 2023)."""

__version__ = "0.1.0"

from ant.core.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]
