"""Min-SNR-gamma loss weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
Weighting Strategy", ICCV, Sec. 3.4).

The paper weights the x0 loss by ``min(SNR, gamma)``: steps with high SNR (little noise) are
capped at ``gamma`` so that they stop dominating, and the conflicting objectives across
timesteps are balanced (the paper's own multi-task reading of diffusion training).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ant.methods.snr_weighting import TabulatedWeighting

if TYPE_CHECKING:
    from ant.diffusion.gaussian import PredictionType


def min_snr_weight(
    snr: torch.Tensor, gamma: float, prediction_type: PredictionType
) -> torch.Tensor:
    """The Min-SNR-gamma weight of the ``prediction_type`` loss (Hang et al. 2023, Sec. 3.4).

    * ``x0``: ``min(SNR, gamma)``, the paper's definition.
    * ``eps``: ``min(SNR, gamma) / SNR``, since the x0 loss is the eps loss / SNR.
    * ``v``: ``min(SNR, gamma) / (SNR + 1)``, since the v loss is the eps loss times
      ``(1 + SNR) / SNR``.

    All three put the same weight ``min(SNR, gamma) / SNR`` on the eps loss (relations in
    :mod:`ant.methods.snr_weighting`). The forms are written to be exact at both ends without
    dividing by zero: the eps weight ``min(SNR, g) / SNR`` equals ``g / max(SNR, g)`` (1 for
    SNR <= g), so SNR = 0 gives 1 and SNR = inf gives 0; the v weight is 0 at SNR = 0 (0 / 1)
    and 0 at SNR = inf (g / inf); the x0 weight is 0 at SNR = 0 and ``g`` at SNR = inf.
    ``gamma`` must be positive.
    """
    capped = torch.clamp(snr, max=gamma)
    if prediction_type == "x0":
        return capped
    if prediction_type == "eps":
        return gamma / torch.clamp(snr, min=gamma)
    if prediction_type == "v":
        return capped / (snr + 1.0)
    raise ValueError(f"unknown prediction type {prediction_type!r}")


class MinSNR(TabulatedWeighting):
    """Min-SNR-gamma weighting of the denoising loss (Hang et al. 2023), gamma = 5 by default."""

    def __init__(self, gamma: float = 5.0) -> None:
        super().__init__()
        if not gamma > 0.0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        self.gamma = gamma

    def table(self, snr: torch.Tensor, prediction_type: PredictionType) -> torch.Tensor:
        return min_snr_weight(snr, self.gamma, prediction_type)
