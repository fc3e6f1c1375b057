"""Classifier-free guidance (Ho & Salimans 2022) for any class-conditional denoiser."""

from __future__ import annotations

from collections.abc import Callable

import torch

ConditionalModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""A denoiser called as ``model(x_t, t, y)`` with class labels ``y`` of shape ``[B]``."""


def guidance_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale * (cond - uncond) (Ho & Salimans 2022, Eq. 6 with scale = 1 + w).

    scale = 1 gives the conditional prediction, scale = 0 the unconditional one. The combination
    is affine with weights summing to 1, so it commutes with the eps / x0 / v conversions (which
    are affine in the prediction for fixed x_t and t): guiding any prediction type is the same.
    """
    return uncond + scale * (cond - uncond)


def guide_doubled_batch(
    model: ConditionalModel,
    x: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    scale: float,
    channels: int,
) -> torch.Tensor:
    """The guided prediction for a batch the caller doubled itself (DiT's ``forward_with_cfg``).

    The second half of ``y`` carries the null label and only the first half of ``x`` is read.
    The first ``channels`` output channels are guided with :func:`guidance_combine`; the rest
    (learned variance) are the conditional half's. Both halves of the result are the guided
    prediction, so a sampler can step the doubled batch as it is.
    """
    batch = x.shape[0]
    if batch % 2:
        raise ValueError(f"forward_with_cfg needs an even batch (cond ++ uncond), got {batch}")
    half = x[: batch // 2]
    output = model(torch.cat([half, half]), t, y)
    pred, rest = output[:, :channels], output[:, channels:]
    cond, uncond = pred.chunk(2)
    guided = torch.cat([guidance_combine(cond, uncond, scale), rest[: batch // 2]], dim=1)
    return torch.cat([guided, guided])


def classifier_free_guidance(
    model: ConditionalModel,
    scale: float,
    *,
    null_label: int,
    learn_sigma: bool = False,
) -> ConditionalModel:
    """Wrap ``model`` so that ``guided(x_t, t, y)`` returns the guided prediction.

    Each call runs ``model`` once on the doubled batch ``[x_t; x_t]`` with labels ``[y; null]``,
    where ``null_label`` is the label the model was trained with for "no class" (``num_classes``
    for DiT's label embedder with class dropout), and combines the halves with
    :func:`guidance_combine` on every channel of the prediction (the original DiT guided only the
    first 3 of 4 latent channels; this does not). With ``learn_sigma`` the second half of the
    channels is a variance, not a prediction: the conditional variance channels are kept as they
    are. With ``scale == 1`` guidance is a no-op and the model runs once on the plain batch.
    """

    def guided(x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if scale == 1.0:
            return model(x_t, t, y)
        null = torch.full_like(y, null_label)
        output = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = output.chunk(2, dim=0)
        if not learn_sigma:
            return guidance_combine(cond, uncond, scale)
        channels = x_t.shape[1]
        cond_pred, cond_var = cond.split(channels, dim=1)
        guided_pred = guidance_combine(cond_pred, uncond[:, :channels], scale)
        return torch.cat([guided_pred, cond_var], dim=1)

    return guided
