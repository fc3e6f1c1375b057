"""Stratified and uniform timestep sampling, and per-cluster losses."""

from __future__ import annotations

import pytest
import torch

from ant.clustering import TaskSpace, cluster_tasks, equal_intervals
from ant.clustering.sampling import proportional_sizes, sampling_density
from ant.core.errors import AntError
from ant.recipe.preflight import check_stratified_batch
from ant.training.timesteps import (
    ChunkLayout,
    ClusterTable,
    chunked_timesteps,
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


@pytest.mark.parametrize(
    ("widths", "batch", "sizes"),
    [
        ([10, 30, 60], 10, [1, 3, 6]),
        ([19, 33, 31, 17], 8, [2, 3, 2, 1]),  # floors 1, 2, 2, 1; the two largest remainders
        ([1, 1, 998], 8, [1, 1, 6]),  # every cluster keeps a sample
        ([250, 250, 250, 250], 12, [3, 3, 3, 3]),  # equal widths: stratified
        ([1, 1, 1, 997], 4, [1, 1, 1, 1]),
    ],
)
def test_proportional_sizes_by_hand(widths: list[int], batch: int, sizes: list[int]) -> None:
    assert proportional_sizes(widths, batch) == sizes


def test_proportional_sizes_always_sum_to_the_batch_with_one_each() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        k = int(torch.randint(1, 9, (1,), generator=gen))
        widths = (torch.randint(1, 400, (k,), generator=gen)).tolist()
        batch = k + int(torch.randint(0, 300, (1,), generator=gen))
        sizes = proportional_sizes(widths, batch)
        assert sum(sizes) == batch and min(sizes) >= 1
        share = [batch * w / sum(widths) for w in widths]
        forced = sum(1 for x in share if x < 1)
        assert all(abs(n - x) < 1 + forced for n, x in zip(sizes, share, strict=True))
    with pytest.raises(ValueError, match="cannot give each of 3 clusters a sample"):
        proportional_sizes([1, 2, 3], 2)


def _snr_table() -> ClusterTable:
    """The paper's log-SNR clustering of the cosine schedule, k = 5: widths far from equal."""
    space = TaskSpace.from_schedule("cosine", 1000)
    intervals = cluster_tasks("snr", space, 5).intervals
    return ClusterTable.from_intervals([(i.low, i.high) for i in intervals], CPU)


def test_proportional_sampling_has_a_uniform_marginal_where_stratified_does_not() -> None:
    """Histograms of t over 4000 batches of 200: the per-timestep density of proportional
    sampling is uniform up to the rounding of the chunk sizes (within 3% here), and the draws
    follow it (chi-square over 100 bins); stratified sampling's density is ``T / (k w_i)``,
    0.7 to 1.7 times uniform on these clusters."""
    table = _snr_table()
    widths = table.widths.double()
    batch, rounds, bins = 200, 4000, 100
    layout = ChunkLayout.proportional(table, batch, 1)
    density = torch.tensor(layout.sizes, dtype=torch.float64) * 1000 / (batch * widths)
    assert float((density - 1).abs().max()) < 0.03
    stratified_density = 1000 / (5 * widths)
    assert float(stratified_density.max()) > 1.6 and float(stratified_density.min()) < 0.75
    intervals = list(zip(table.starts.tolist(), table.ends.tolist(), strict=True))
    per_t = torch.bucketize(torch.arange(1000), table.ends)
    for mode, expected in (("proportional", density), ("stratified", stratified_density)):
        computed = torch.from_numpy(sampling_density(intervals, mode, batch))
        torch.testing.assert_close(computed, expected[per_t])
    torch.manual_seed(0)
    proportional = torch.cat([chunked_timesteps(table, layout.cluster) for _ in range(rounds)])
    stratified = torch.cat([stratified_timesteps(table, batch)[0] for _ in range(rounds)])
    uniform = proportional.numel() / bins
    for draws, per_cluster in ((proportional, density), (stratified, stratified_density)):
        per_t = per_cluster[torch.bucketize(torch.arange(1000), table.ends)]
        expected = per_t.reshape(bins, -1).sum(1) * uniform / 10
        counts = torch.bincount(draws // 10, minlength=bins).double()
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < bins + 5 * (2 * bins) ** 0.5, chi2
    flat = torch.bincount(proportional // 10, minlength=bins).double() / uniform
    assert float((flat - 1).abs().max()) < 0.06
    skewed = torch.bincount(stratified // 10, minlength=bins).double() / uniform
    assert float(skewed.max()) > 1.5 and float(skewed.min()) < 0.8


def test_proportional_losses_are_cluster_means() -> None:
    table = _snr_table()
    layout = ChunkLayout.proportional(table, 60, 2)
    assert sum(layout.sizes) == 30 and layout.counts.tolist() == [2 * n for n in layout.sizes]
    per_sample = torch.rand(60, generator=torch.Generator().manual_seed(1))
    losses = cluster_losses(per_sample, layout.cluster, 5, layout.counts)
    torch.testing.assert_close(losses, cluster_means(per_sample, layout.cluster, 5))
    halves = [
        cluster_losses(per_sample[i], layout.cluster[i], 5, layout.counts) for i in layout.micro
    ]
    torch.testing.assert_close(halves[0] + halves[1], losses)
    for index in layout.micro:  # each micro-batch is proportional like the batch
        assert torch.bincount(layout.cluster[index], minlength=5).tolist() == list(layout.sizes)
