"""Learning-rate schedules: linear warmup, then constant, cosine, linear or inverse-sqrt decay.

The schedule multiplies each parameter group's own learning rate by a factor that depends only
on the step (:func:`lr_factor`), through ``torch.optim.lr_scheduler.LambdaLR``; the scheduler's
state is stored in checkpoints, so a resumed run continues the same curve bitwise. The learned
parameters of the method and the weighting (UW's log-variances at lr 0.025) keep their constant
learning rate unless ``optim.schedule_method_params`` is set.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear", "inverse_sqrt")
DECAYING: frozenset[str] = frozenset({"cosine", "linear"})
"""The schedules whose curve depends on the decay horizon (``optim.decay_steps``)."""


def lr_factor(
    step: int, schedule: str, *, warmup: int, horizon: int, min_ratio: float = 0.0
) -> float:
    """The learning-rate multiplier of the update that follows ``step`` completed updates.

    Warmup is linear, ``(step + 1) / warmup`` for ``step < warmup``, so the first update uses
    ``lr / warmup`` and update ``warmup`` the full rate. After it, with
    ``p = (step - warmup) / (horizon - warmup)`` clipped to [0, 1] and ``m = min_ratio``:

    - ``constant``: 1;
    - ``cosine`` (Loshchilov & Hutter 2017, SGDR eq. 5): ``m + (1 - m) (1 + cos(pi p)) / 2``;
    - ``linear``: ``m + (1 - m) (1 - p)``;
    - ``inverse_sqrt`` (Vaswani et al. 2017, eq. 3 after warmup): ``sqrt(max(warmup, 1) /
      (step + 1))``, never below ``m``.

    ``horizon`` is the step where cosine and linear reach ``m`` and stay.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "inverse_sqrt":
        return max(min_ratio, math.sqrt(max(warmup, 1) / (step + 1)))
    span = horizon - warmup
    progress = 1.0 if span <= 0 else min(1.0, (step - warmup) / span)
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    raise ValueError(f"unknown schedule {schedule!r}: one of {', '.join(SCHEDULES)}")


def _constant(step: int) -> float:
    return 1.0


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    *,
    warmup: int,
    horizon: int,
    min_lr: float,
    scheduled_groups: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor` to the first ``scheduled_groups`` parameter
    groups (the model's, and the method's when they are scheduled too); the others stay
    constant. ``min_lr`` is relative to the first group's learning rate."""
    base = float(optimizer.param_groups[0]["lr"])
    factor = functools.partial(
        lr_factor,
        schedule=schedule,
        warmup=warmup,
        horizon=horizon,
        min_ratio=min_lr / base,
    )
    lambdas: list[Callable[[int], float]] = [
        factor if index < scheduled_groups else _constant
        for index in range(len(optimizer.param_groups))
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
