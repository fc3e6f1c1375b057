"""Contiguous timestep intervals: the clusters ANT balances (Go et al. 2023, Sec. 4.1)."""

from __future__ import annotations

Interval = tuple[int, int]


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
        intervals.append((start, start + width - 1))
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
