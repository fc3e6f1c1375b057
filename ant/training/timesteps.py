"""Timestep sampling and per-cluster losses (ANT, Go et al. 2023, Sec. 4 and Appendix).

Stratified sampling splits the local batch into k equal contiguous chunks; chunk i draws t
uniformly inside cluster i, so every cluster gets B/k samples on every rank. Uniform sampling draws
t uniformly from 0..T-1. In both cases the per-cluster loss is ``l_i = (k / B) * sum_{t_b in I_i}
loss_b``: with stratified sampling that is the mean over chunk i; with uniform sampling it weights
each cluster's mean by its share of the batch, so that ``mean_i l_i`` is the plain batch mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ant.clustering import Interval


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
    offsets = torch.rand(batch, device=table.starts.device) * table.widths[cluster]
    return table.starts[cluster] + offsets.long(), cluster


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


def cluster_losses(per_sample: torch.Tensor, cluster: torch.Tensor, k: int) -> torch.Tensor:
    """``l_i = (k / B) * sum of the losses of the samples in cluster i`` (shape ``[k]``)."""
    totals = torch.zeros(k, dtype=per_sample.dtype, device=per_sample.device)
    return totals.index_add(0, cluster, per_sample) * (k / per_sample.shape[0])


def cluster_means(per_sample: torch.Tensor, cluster: torch.Tensor, k: int) -> torch.Tensor:
    """The mean loss of each cluster's samples (0 for a cluster with none), for logging."""
    totals = torch.zeros(k, dtype=per_sample.dtype, device=per_sample.device)
    counts = torch.zeros(k, dtype=per_sample.dtype, device=per_sample.device)
    totals = totals.index_add(0, cluster, per_sample.detach())
    counts = counts.index_add(0, cluster, torch.ones_like(per_sample))
    return totals / counts.clamp_min(1)
