"""How the timesteps of a batch are spread over the k clusters (``clustering.sampling``), and
the per-timestep density each way gives (the sampling functions are in
:mod:`ant.training.timesteps`).

With a batch of B samples and clusters of widths w_i (sum T):

* ``stratified`` (ANT, Go et al. 2023): B/k samples per cluster, so timestep t of cluster i is
  drawn with probability ``1 / (k w_i)``, ``T / (k w_i)`` times the uniform ``1 / T``;
* ``proportional``: ``n_i`` samples per cluster, proportional to ``w_i``
  (:func:`proportional_sizes`), density ``n_i T / (B w_i)`` times uniform, 1 up to the rounding
  of the ``n_i``;
* ``uniform``: t uniform in 0..T-1, density 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SAMPLINGS = ("stratified", "proportional", "uniform")


def proportional_sizes(widths: Sequence[int], batch: int) -> list[int]:
    """Chunk sizes ``n_i`` proportional to the cluster widths, summing to ``batch``.

    Each gets ``floor(batch w_i / T)``, at least one; the samples left go to the largest
    remainders ``batch w_i / T - n_i`` (ties to the earlier cluster), and samples beyond
    ``batch`` (from the at-least-one rule) are taken from the largest chunks.
    """
    k, total = len(widths), sum(widths)
    if batch < k:
        raise ValueError(f"a batch of {batch} cannot give each of {k} clusters a sample")
    exact = [batch * w / total for w in widths]
    sizes = [max(1, int(e)) for e in exact]
    order = sorted(range(k), key=lambda i: (-(exact[i] - int(exact[i])), i))
    spare = batch - sum(sizes)
    for i in order[: max(spare, 0)]:
        sizes[i] += 1
    while sum(sizes) > batch:
        largest = max(range(k), key=lambda i: (sizes[i], -i))
        sizes[largest] -= 1
    return sizes


def sampling_density(intervals: Sequence[tuple[int, int]], mode: str, batch: int) -> np.ndarray:
    """The probability of each timestep under ``mode`` over the uniform ``1 / T`` (``[T]``)."""
    widths = np.array([end - start + 1 for start, end in intervals], dtype=np.float64)
    total = float(widths.sum())
    if mode == "stratified":
        per_cluster = total / (len(widths) * widths)
    elif mode == "proportional":
        sizes = np.array(proportional_sizes([int(w) for w in widths], batch), dtype=np.float64)
        per_cluster = sizes * total / (batch * widths)
    elif mode == "uniform":
        per_cluster = np.ones_like(widths)
    else:
        raise ValueError(f"unknown sampling '{mode}': one of {', '.join(SAMPLINGS)}")
    return np.repeat(per_cluster, widths.astype(np.int64))
