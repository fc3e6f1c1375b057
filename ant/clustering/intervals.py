"""Contiguous timestep intervals: the clusters ANT balances (Go et al. 2023, Sec. 4.1)."""

from __future__ import annotations

from typing import Any, NamedTuple

from ant.core.errors import AntError


class Interval(NamedTuple):
    """Timesteps ``low..high``, both included, 0-indexed: one cluster of denoising tasks (the
    paper's interval ``I``), a ``train.timestep_range`` or an NTG interval.

    A tuple, so ``(0, 199) == Interval(0, 199)``, it unpacks as ``low, high`` and it is written
    to JSON and checkpoints as ``[low, high]``.
    """

    low: int
    high: int

    def __str__(self) -> str:
        return f"[{self.low}, {self.high}]"

    @property
    def name(self) -> str:
        """``200-399``: for folder names."""
        return f"{self.low}-{self.high}"

    @property
    def width(self) -> int:
        """The number of timesteps in the interval."""
        return self.high - self.low + 1

    def mask(self, t: Any) -> Any:
        """Which of the timesteps ``t`` (an array or tensor) lie in the interval."""
        return (t >= self.low) & (t <= self.high)

    def check(self, timesteps: int, where: str) -> None:
        """Raise :class:`AntError` unless ``0 <= low <= high < timesteps``."""
        if not 0 <= self.low <= self.high < timesteps:
            raise AntError(
                f"{where}: interval {self} must satisfy 0 <= a <= b < {timesteps} "
                "(the diffusion's timesteps)"
            )


def equal_intervals(num_timesteps: int, k: int) -> list[Interval]:
    """Split ``0..T-1`` into ``k`` contiguous intervals of (near-)equal width.

    Intervals are inclusive and 0-indexed. When ``T`` is not divisible by ``k`` the first
    ``T mod k`` intervals are one timestep wider.
    """
    if k < 1 or k > num_timesteps:
        raise ValueError(f"k must be in 1..{num_timesteps}, got {k}")
    base, extra = divmod(num_timesteps, k)
    intervals: list[Interval] = []
    start = 0
    for i in range(k):
        width = base + (1 if i < extra else 0)
        intervals.append(Interval(start, start + width - 1))
        start += width
    return intervals


def validate_intervals(intervals: list[Interval], num_timesteps: int) -> None:
    """Raise ``ValueError`` unless ``intervals`` cover ``0..T-1`` once, in order, none empty."""
    expected = 0
    for start, end in intervals:
        if start != expected or end < start:
            raise ValueError(f"intervals {intervals} do not tile 0..{num_timesteps - 1}")
        expected = end + 1
    if expected != num_timesteps:
        raise ValueError(f"intervals {intervals} do not tile 0..{num_timesteps - 1}")
