"""Timestep sampling and per-cluster losses (ANT, Go et al. 2023, Sec. 4 and Appendix).

Three ways to draw the timesteps of a local batch of B samples over k clusters of widths w_i
(``clustering.sampling``):

* **stratified** (the paper's): k equal contiguous chunks; chunk i draws t uniformly inside
  cluster i, so every cluster gets B/k samples on every rank. A timestep of cluster i is drawn
  with probability ``1 / (k w_i)``: clusters of unequal width (log-SNR or gradient objectives)
  reweight the timesteps by ``T / (k w_i)`` against uniform.
* **proportional**: still one contiguous chunk per cluster, but of ``n_i`` samples proportional
  to ``w_i`` (:func:`ant.clustering.sampling.proportional_sizes`, largest remainders, at least
  one each), so the marginal of t is uniform up to the rounding of the ``n_i``.
* **uniform**: t uniform in 0..T-1, clusters as they fall.

The per-cluster loss is ``l_i = sum_{t_b in I_i} loss_b / c_i``. For stratified and uniform
sampling ``c_i = B / k``: with stratified sampling that is the mean over chunk i; with uniform
sampling it weights each cluster's mean by its share of the batch, so that ``mean_i l_i`` is the
plain batch mean. For proportional sampling ``c_i = n_i``: the losses stay the cluster means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ant.clustering import Interval
from ant.clustering.sampling import proportional_sizes


@dataclass(frozen=True)
class ClusterTable:
    """The k intervals as tensors on one device: first timestep, width and last timestep."""

    starts: torch.Tensor
    widths: torch.Tensor
    ends: torch.Tensor

    @property
    def k(self) -> int:
        """The number of clusters."""
        return int(self.starts.shape[0])

    @classmethod
    def from_intervals(cls, intervals: list[Interval], device: torch.device) -> ClusterTable:
        """Tensors of the inclusive ``(start, end)`` intervals."""
        starts = torch.tensor([s for s, _ in intervals], dtype=torch.long, device=device)
        ends = torch.tensor([e for _, e in intervals], dtype=torch.long, device=device)
        return cls(starts=starts, widths=ends - starts + 1, ends=ends)


def stratified_timesteps(table: ClusterTable, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps ``[B]`` with chunk i drawn uniformly in cluster i, and each sample's cluster."""
    cluster = torch.arange(batch, device=table.starts.device) // (batch // table.k)
    return chunked_timesteps(table, cluster), cluster


@dataclass(frozen=True)
class ChunkLayout:
    """Proportional chunks of a local batch split into ``parts`` micro-batches: every
    micro-batch has ``sizes[i]`` samples of cluster i; the local batch holds cluster i's
    ``parts * sizes[i]`` samples contiguously, and micro-batch m takes the m-th ``sizes[i]`` of
    each."""

    sizes: tuple[int, ...]
    cluster: torch.Tensor
    counts: torch.Tensor
    micro: tuple[torch.Tensor, ...]

    @classmethod
    def proportional(cls, table: ClusterTable, batch: int, parts: int) -> ChunkLayout:
        """The layout of a local batch of ``batch`` samples (built once per batch size)."""
        device = table.starts.device
        sizes = proportional_sizes(table.widths.tolist(), batch // parts)
        chunk = torch.tensor(sizes, device=device) * parts
        cluster = torch.repeat_interleave(torch.arange(len(sizes), device=device), chunk)
        first = [parts * sum(sizes[:i]) for i in range(len(sizes))]
        micro = tuple(
            torch.cat(
                [
                    torch.arange(start + m * n, start + (m + 1) * n, device=device)
                    for start, n in zip(first, sizes, strict=True)
                ]
            )
            for m in range(parts)
        )
        return cls(tuple(sizes), cluster, chunk.to(torch.float32), micro)


def chunked_timesteps(table: ClusterTable, cluster: torch.Tensor) -> torch.Tensor:
    """Timesteps drawn uniformly inside each sample's cluster ``cluster`` ``[B]``."""
    offsets = torch.rand(cluster.shape[0], device=table.starts.device) * table.widths[cluster]
    return table.starts[cluster] + offsets.long()


def uniform_timesteps(
    table: ClusterTable, num_timesteps: int, batch: int, span: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps ``[B]`` uniform in ``0..T-1`` (or in the inclusive ``span``), and their clusters.

    A ``span`` trains an interval-specific model (``train.timestep_range``), as for the negative
    transfer gap of ANT (Go et al. 2023, Sec. 3).
    """
    low, high = span if span is not None else (0, num_timesteps - 1)
    t = torch.randint(low, high + 1, (batch,), device=table.starts.device)
    return t, torch.bucketize(t, table.ends)


def cluster_losses(
    per_sample: torch.Tensor, cluster: torch.Tensor, k: int, counts: torch.Tensor | None = None
) -> torch.Tensor:
    """``l_i = sum of the losses of the samples in cluster i / c_i`` (shape ``[k]``), with
    ``c_i = counts[i]``, by default ``B / k`` for the ``B`` samples given."""
    totals = torch.zeros(k, dtype=per_sample.dtype, device=per_sample.device)
    totals = totals.index_add(0, cluster, per_sample)
    if counts is None:
        return totals * (k / per_sample.shape[0])
    return totals / counts.to(per_sample.dtype)


def cluster_means(per_sample: torch.Tensor, cluster: torch.Tensor, k: int) -> torch.Tensor:
    """The mean loss of each cluster's samples (0 for a cluster with none), for logging."""
    totals = torch.zeros(k, dtype=per_sample.dtype, device=per_sample.device)
    counts = torch.zeros(k, dtype=per_sample.dtype, device=per_sample.device)
    totals = totals.index_add(0, cluster, per_sample.detach())
    counts = counts.index_add(0, cluster, torch.ones_like(per_sample))
    return totals / counts.clamp_min(1)
