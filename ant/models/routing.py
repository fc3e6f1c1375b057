"""Denoising Task Routing (Park et al., "Denoising Task Routing for Diffusion Models", ICLR 2024,
arXiv:2310.07138, Sec. 3): one fixed channel mask per timestep.

DTR treats every timestep t of the T denoising tasks as a task with its own pathway through a
shared network. The pathway of task t is a binary mask ``m_t`` over the D hidden channels with
``C = int(D * ratio)`` ones in one contiguous window that starts at

    s_t = round((t / (T - 1))^alpha * (D - C))                        (Sec. 3.2, Eq. 4)

so the window slides from the first channels (t = 0) to the last (t = T - 1). Neighbouring
timesteps share most channels and distant ones few ("task affinity"), and ``alpha > 1`` makes the
window move slowly at small t and fast at large t ("task weights": the low-noise tasks, whose
masks overlap most, share the most capacity). The masks are fixed, not learned, and add no
parameters. A block sees the active channels of its input only, and the inactive ones are
carried past it:

    r = x * m_t;   r = r + Block(r);   out = r + x * (1 - m_t)

(the block's residual branches still write to every channel, as in the authors' code). The final
layer is not routed. :class:`TaskRouting` holds the ``[T, D]``
table as a non-persistent buffer, so checkpoints of a routed model have the keys of the unrouted
one, and returns the rows of a batch's (original) timesteps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class RoutingSpec:
    """DTR's settings: the active share of the channels, the sliding exponent and T."""

    ratio: float = 0.8
    alpha: float = 4.0
    timesteps: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"the routing ratio must lie in (0, 1], got {self.ratio}")
        if not self.alpha > 0.0:
            raise ValueError(f"the routing alpha must be positive, got {self.alpha}")
        if self.timesteps < 2:
            raise ValueError(f"routing needs at least 2 timesteps, got {self.timesteps}")


def active_channels(channels: int, ratio: float) -> int:
    """``C = int(D * ratio)``, the number of channels each task uses (at least one)."""
    return max(1, int(channels * ratio))


def window_starts(timesteps: int, channels: int, ratio: float, alpha: float) -> torch.Tensor:
    """``s_t = round((t / (T - 1))^alpha * (D - C))`` for ``t = 0 .. T-1`` (DTR Eq. 4), int64.

    Computed in float64 and rounded by ``torch.round`` (halves to even).
    """
    free = channels - active_channels(channels, ratio)
    position = torch.arange(timesteps, dtype=torch.float64) / (timesteps - 1)
    return torch.round(position.pow(alpha) * free).long()


def routing_masks(timesteps: int, channels: int, ratio: float, alpha: float) -> torch.Tensor:
    """The ``[T, D]`` binary masks ``m_t`` (float32): ones at ``s_t .. s_t + C - 1``."""
    width = active_channels(channels, ratio)
    starts = window_starts(timesteps, channels, ratio, alpha)
    columns = torch.arange(channels)
    inside = (columns[None, :] >= starts[:, None]) & (columns[None, :] < starts[:, None] + width)
    return inside.float()


def route(
    x: torch.Tensor, mask: torch.Tensor, block: nn.Module, *args: torch.Tensor
) -> torch.Tensor:
    """``r = x * m; r = block(r, *args); out = r + x * (1 - m)`` for tokens ``x`` ``[B, N, D]``
    and masks ``[B, D]``; ``block`` returns its input plus its residual branches."""
    m = mask.to(x.dtype).unsqueeze(1)
    return block(x * m, *args) + x * (1 - m)


class TaskRouting(nn.Module):
    """The masks of :class:`RoutingSpec` over ``channels`` channels, looked up by timestep."""

    masks: torch.Tensor

    def __init__(self, spec: RoutingSpec, channels: int) -> None:
        super().__init__()
        self.spec = spec
        table = routing_masks(spec.timesteps, channels, spec.ratio, spec.alpha)
        self.register_buffer("masks", table, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """The masks ``[B, D]`` of the original timesteps ``t`` ``[B]`` (integer-valued)."""
        return self.masks.index_select(0, t.long())

    def extra_repr(self) -> str:
        spec = self.spec
        return f"ratio={spec.ratio}, alpha={spec.alpha}, timesteps={spec.timesteps}"
