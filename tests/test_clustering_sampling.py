"""Stratified against uniform timestep sampling over clusters of unequal widths."""

from __future__ import annotations

import torch
from scipy.stats import chisquare

from ant.training.timesteps import ClusterTable, stratified_timesteps, uniform_timesteps

CPU = torch.device("cpu")
INTERVALS = [(0, 132), (133, 371), (372, 652), (653, 880), (881, 999)]
BATCH = 100_000


def test_stratified_gives_each_cluster_b_over_k_so_narrow_clusters_are_over_sampled() -> None:
    torch.manual_seed(0)
    table = ClusterTable.from_intervals(INTERVALS, CPU)
    t, cluster = stratified_timesteps(table, BATCH)
    counts = torch.bincount(cluster, minlength=5)
    assert counts.tolist() == [BATCH // 5] * 5
    per_timestep = torch.bincount(t, minlength=1000).float()
    widths = table.widths.float()
    rates = torch.stack([per_timestep[s : e + 1].mean() for s, e in INTERVALS])
    assert torch.allclose(rates, (BATCH / 5) / widths, rtol=0.02)
    assert rates[4] > 2 * rates[2]


def test_uniform_cluster_counts_follow_the_widths() -> None:
    torch.manual_seed(1)
    table = ClusterTable.from_intervals(INTERVALS, CPU)
    t, cluster = uniform_timesteps(table, 1000, BATCH)
    counts = torch.bincount(cluster, minlength=5).double()
    expected = table.widths.double() / 1000 * BATCH
    assert chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3
    assert torch.allclose(counts / BATCH, table.widths.double() / 1000, atol=0.005)
    assert chisquare(torch.bincount(t, minlength=1000).double().numpy()).pvalue > 1e-3
