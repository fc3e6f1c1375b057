"""Stratified and uniform timestep sampling, and per-cluster losses."""

from __future__ import annotations

import pytest
import torch

from ant.clustering import equal_intervals
from ant.core.errors import AntError
from ant.recipe.preflight import check_stratified_batch
from ant.training.timesteps import (
    ClusterTable,
    cluster_losses,
    cluster_means,
    stratified_timesteps,
    uniform_timesteps,
)

CPU = torch.device("cpu")


def test_stratified_chunks_draw_uniformly_inside_their_cluster() -> None:
    torch.manual_seed(0)
    intervals = [(0, 99), (100, 349), (350, 999)]
    table = ClusterTable.from_intervals(intervals, CPU)
    draws = [stratified_timesteps(table, 30) for _ in range(2000)]
    t = torch.stack([d[0] for d in draws])
    cluster = draws[0][1]
    assert cluster.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    for i, (start, end) in enumerate(intervals):
        chunk = t[:, i * 10 : (i + 1) * 10].reshape(-1)
        assert int(chunk.min()) == start and int(chunk.max()) == end
        width = end - start + 1
        counts = torch.bincount(chunk - start, minlength=width).float()
        expected = chunk.numel() / width
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < width + 5 * (2 * width) ** 0.5


def test_equal_width_stratified_marginal_is_uniform() -> None:
    torch.manual_seed(1)
    table = ClusterTable.from_intervals(equal_intervals(50, 5), CPU)
    t = torch.cat([stratified_timesteps(table, 50)[0] for _ in range(2000)])
    counts = torch.bincount(t, minlength=50).float()
    assert torch.allclose(counts / counts.mean(), torch.ones(50), atol=0.1)


def test_uniform_timesteps_know_their_cluster() -> None:
    torch.manual_seed(2)
    intervals = [(0, 9), (10, 10), (11, 99)]
    t, cluster = uniform_timesteps(ClusterTable.from_intervals(intervals, CPU), 100, 4096)
    for i, (start, end) in enumerate(intervals):
        assert bool(((t[cluster == i] >= start) & (t[cluster == i] <= end)).all())
    assert set(cluster.tolist()) == {0, 1, 2}


def test_cluster_losses_are_chunk_means_when_stratified_and_keep_the_plain_mean() -> None:
    losses = torch.tensor([1.0, 3.0, 2.0, 2.0, 10.0, 0.0])
    cluster = torch.tensor([0, 0, 1, 1, 2, 2])
    assert cluster_losses(losses, cluster, 3).tolist() == [2.0, 2.0, 5.0]
    uneven = torch.tensor([0, 0, 0, 1, 2, 2])
    per_cluster = cluster_losses(losses, uneven, 3)
    assert per_cluster.mean().item() == pytest.approx(losses.mean().item())
    assert cluster_means(losses, uneven, 3).tolist() == [2.0, 2.0, 5.0]
    assert cluster_means(losses, torch.zeros(6, dtype=torch.long), 3).tolist()[1:] == [0.0, 0.0]


def test_batch_not_divisible_by_k_is_a_clear_error() -> None:
    check_stratified_batch(20, 5)
    with pytest.raises(AntError, match=r"per-rank batch \(18\).*clustering.k \(5\)"):
        check_stratified_batch(18, 5)
