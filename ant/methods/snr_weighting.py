"""Per-timestep loss weights as functions of the SNR, tabulated once per diffusion process.

A weighting paper states its weight for one loss; the denoising loss the trainer computes is the
squared error of whatever the model predicts. With x_t = alpha x0 + sigma eps, alpha^2 + sigma^2
= 1 and SNR = alpha^2 / sigma^2, predictions that agree (pred_x0 = (x_t - sigma pred_eps) / alpha,
pred_v = alpha pred_eps - sigma pred_x0) have errors related by

* x0 error = -(sigma / alpha) eps error, so  ``x0 loss = eps loss / SNR``;
* v error = (alpha + sigma^2 / alpha) eps error = eps error / alpha, so
  ``v loss = eps loss / alpha^2 = eps loss * (1 + SNR) / SNR``

(Salimans & Ho 2022, Sec. 4). A weight ``w_eps`` on the eps loss is therefore the
weight ``w_eps * SNR`` on the x0 loss and ``w_eps * SNR / (1 + SNR)`` on the v loss: all three
give the same update for the same network function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ant.diffusion.schedules import snr as snr_of
from ant.methods.base import TimestepWeighting

if TYPE_CHECKING:
    from ant.diffusion import GaussianDiffusion
    from ant.diffusion.gaussian import PredictionType


def eps_to_prediction_weight(
    eps_weight: torch.Tensor, snr: torch.Tensor, prediction_type: PredictionType
) -> torch.Tensor:
    """The weight on the ``prediction_type`` loss equivalent to ``eps_weight`` on the eps loss.

    ``eps``: ``w``; ``x0``: ``w * SNR``; ``v``: ``w * SNR / (1 + SNR)``, computed as
    ``w / (1 + 1 / SNR)`` so that SNR = 0 gives 0 and SNR = inf gives ``w`` (see the module
    docstring for the loss relations). ``snr`` must be finite for ``x0``, where the limit at
    SNR = inf depends on how fast ``w`` decays.
    """
    if prediction_type == "eps":
        return eps_weight
    if prediction_type == "x0":
        return eps_weight * snr
    if prediction_type == "v":
        return eps_weight / (1.0 + torch.reciprocal(snr))
    raise ValueError(f"unknown prediction type {prediction_type!r}")


class TabulatedWeighting(TimestepWeighting):
    """A fixed weight per timestep, tabulated by :meth:`bind`; ``weigh`` is one gather.

    Subclasses implement :meth:`table` (the weight of the model's own loss as a function of the
    SNR). The table is a non-persistent buffer: ``.to(device)`` moves it, before or after
    ``bind``, and checkpoints do not hold it (it follows from the schedule).
    """

    weights: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weights", torch.zeros(0), persistent=False)

    def table(self, snr: torch.Tensor, prediction_type: PredictionType) -> torch.Tensor:
        """The weight of the ``prediction_type`` loss at each SNR of ``snr`` (float64)."""
        raise NotImplementedError

    def bind(self, diffusion: GaussianDiffusion) -> None:
        snr = snr_of(diffusion.alphas_cumprod)
        table = self.table(snr, diffusion.prediction_type)
        self.weights = table.to(device=self.weights.device, dtype=self.weights.dtype)

    def weigh(self, mse: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.weights.numel() == 0:
            raise RuntimeError(f"{type(self).__name__}.bind(diffusion) must be called first")
        return self.weights[t] * mse
