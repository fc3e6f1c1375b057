"""P2 weighting (Choi et al. 2022, "Perception Prioritized Training of Diffusion Models", CVPR,
Eq. 8).

The paper reweights the simple eps loss by ``1 / (k + SNR)^gamma``: steps with high SNR, where the
model only removes imperceptible detail, are down-weighted, and the coarse and content stages
(low SNR) get relatively more of the training signal. ``k`` keeps the weight finite at SNR = 0;
the paper uses ``k = 1`` and ``gamma`` 0.5 or 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ant.methods.snr_weighting import TabulatedWeighting, eps_to_prediction_weight

if TYPE_CHECKING:
    from ant.diffusion.gaussian import PredictionType


def p2_eps_weight(snr: torch.Tensor, k: float, gamma: float) -> torch.Tensor:
    """``1 / (k + SNR)^gamma``, the P2 weight of the eps loss (Choi et al. 2022, Eq. 8).

    Eq. 8 writes the weight as ``lambda_t / (k + SNR(t))^gamma`` with ``lambda_t`` the weight of
    the loss it modifies; for the simple eps loss ``lambda_t = 1``. Finite for ``k > 0`` and any
    SNR in [0, inf] (it is 0 at SNR = inf for ``gamma > 0``).
    """
    return torch.pow(k + snr, -gamma)


class P2(TabulatedWeighting):
    """P2 weighting of the denoising loss (Choi et al. 2022), converted to the prediction type.

    The eps weight of Eq. 8 becomes ``w * SNR`` for an x0-predicting model and
    ``w * SNR / (1 + SNR)`` for a v-predicting one, the weights that give the same update
    (:func:`ant.methods.snr_weighting.eps_to_prediction_weight`).
    """

    def __init__(self, k: float = 1.0, gamma: float = 1.0) -> None:
        super().__init__()
        if not k > 0.0:
            raise ValueError(f"k must be positive, got {k}")
        if not gamma >= 0.0:
            raise ValueError(f"gamma must be non-negative, got {gamma}")
        self.k = k
        self.gamma = gamma

    def table(self, snr: torch.Tensor, prediction_type: PredictionType) -> torch.Tensor:
        return eps_to_prediction_weight(
            p2_eps_weight(snr, self.k, self.gamma), snr, prediction_type
        )
