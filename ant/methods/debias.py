"""Debiased loss weighting (Yu et al. 2024, "Unmasking Bias in Diffusion Model Training", ECCV).

The paper identifies a bias in the constant weighting of the simple eps loss across timesteps
and corrects it with the eps-loss weight ``1 / sqrt(SNR)`` (``sqrt(SNR)`` on the x0 loss). That
weight grows without bound as the SNR goes to 0: a linear schedule with T = 1000 ends at
SNR = 4.0e-5 (weight 157), but the cosine schedule, whose last beta is clipped to 0.999, ends at
SNR = 2.4e-9 (weight 2.0e4, against 642 one step earlier), so a single timestep would dominate
the loss and its gradient noise.

The guard caps the eps weight at ``max_weight``, i.e. clamps the SNR from below at
``1 / max_weight^2``. The default 1000 (SNR >= 1e-6) is above every weight of the linear
schedule, which it leaves untouched, and below the weight of the last cosine step, the only one
it changes: that step's SNR is an artefact of the clipped beta, not a noise level to emphasise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ant.methods.snr_weighting import TabulatedWeighting, eps_to_prediction_weight

if TYPE_CHECKING:
    from ant.diffusion.gaussian import PredictionType


def debias_eps_weight(snr: torch.Tensor, max_weight: float) -> torch.Tensor:
    """``1 / sqrt(max(SNR, 1 / max_weight^2))``: the debiased eps-loss weight (Yu et al. 2024).

    Equal to ``min(1 / sqrt(SNR), max_weight)``: finite at SNR = 0 (``max_weight``) and 0 at
    SNR = inf.
    """
    return torch.rsqrt(torch.clamp(snr, min=max_weight**-2))


class Debias(TabulatedWeighting):
    """Debiased weighting ``1 / sqrt(SNR)`` of the eps loss (Yu et al. 2024), capped.

    ``max_weight`` bounds the eps-equivalent weight (see the module docstring for the default).
    For x0 and v models the weight is converted to give the same update
    (:func:`ant.methods.snr_weighting.eps_to_prediction_weight`): ``sqrt(SNR)`` on the x0 loss,
    ``sqrt(SNR) / (1 + SNR)`` on the v loss, both already bounded, with the cap applied to the
    eps-equivalent weight all the same.
    """

    def __init__(self, max_weight: float = 1000.0) -> None:
        super().__init__()
        if not max_weight > 0.0:
            raise ValueError(f"max_weight must be positive, got {max_weight}")
        self.max_weight = max_weight

    def table(self, snr: torch.Tensor, prediction_type: PredictionType) -> torch.Tensor:
        return eps_to_prediction_weight(
            debias_eps_weight(snr, self.max_weight), snr, prediction_type
        )
