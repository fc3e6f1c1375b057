"""Gradient accumulation: N micro-batches give the update of one step on the whole batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ant.core.errors import AntError
from ant.training.loop import fit
from ant.training.step import Batch
from ant.training.timesteps import ChunkLayout
from tests.test_methods_training import (
    CPU_CTX,
    _batch,
    _same,
    _step,
    _weights,
    make_recipe,
    spawn_two_ranks,
)

ACCUM_METHODS = {
    "vanilla": [],
    "uw": [],
    "weighting.name=minsnr": [],
    "weighting.name=edm2_uncertainty": [],
    "rlw": [],
    "famo": [],
    "dwa": ["method.period=1"],
    "pcgrad": [],
    "cagrad": [],
    "imtl": [],
    "nashmtl": ["method.update_every=2"],
}


@pytest.mark.parametrize("method", list(ACCUM_METHODS))
@pytest.mark.parametrize("parts", [2, 4])
def test_accumulated_micro_batches_equal_one_step_on_the_whole_batch(
    tmp_path: Path, method: str, parts: int
) -> None:
    """Three steps (Nash-MTL solves on steps 1 and 3 and reuses its weights on step 2; FAMO and
    DWA update from the observed losses) give the same weights and method state."""
    name = method if "=" in method else f"method.name={method}"
    overrides = [name, *ACCUM_METHODS[method]]
    whole = _step(make_recipe(tmp_path, *overrides))
    split = _step(make_recipe(tmp_path, *overrides, f"train.grad_accum={parts}"))
    for seed in range(3):
        batch = _batch(seed, 16, 4)
        a = whole.update(*batch, measure=True)
        b = split.update(*batch, measure=True)
        assert torch.allclose(a.loss, b.loss, atol=1e-6)
        assert torch.allclose(a.objective, b.objective, atol=1e-5)
        assert torch.allclose(a.cluster_loss, b.cluster_loss, atol=1e-6)
    assert torch.allclose(_weights(whole), _weights(split), atol=2e-6), method
    for key, value in whole.method.state_dict().items():
        other = split.method.state_dict()[key]
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert torch.allclose(value, other, atol=1e-5), key
        else:
            assert _same(value, other), key
    assert not torch.equal(_weights(whole), _weights(_step(make_recipe(tmp_path, *overrides))))


def test_micro_batches_are_stratified_like_the_batch(tmp_path: Path) -> None:
    step = _step(make_recipe(tmp_path, "method.name=uw", "train.grad_accum=2"))
    x0, y, t, cluster, noise = _batch(0, 16, 4)
    parts = step.micro_batches(Batch(x0, x0, t, y, noise, cluster))
    assert [part.cluster.tolist() for part in parts] == [[0, 0, 1, 1, 2, 2, 3, 3]] * 2
    assert torch.equal(torch.cat([p.t for p in parts]).sort().values, t.sort().values)


def test_a_batch_that_does_not_split_gets_one_line(tmp_path: Path) -> None:
    with pytest.raises(AntError, match=r"train\.grad_accum=3 must divide the per-rank batch"):
        _step(make_recipe(tmp_path, "method.name=pcgrad", "train.grad_accum=3"))


def test_two_gloo_ranks_with_accumulation_match_one_process(tmp_path: Path) -> None:
    """2 ranks x 2 micro-batches equal one process on the whole batch, for a loss method and a
    gradient method, and both ranks hold the same weights."""
    base = ["train.global_batch_size=32"]
    recipes = {
        "uw": make_recipe(tmp_path, "method.name=uw", *base, "train.grad_accum=2"),
        "pcgrad": make_recipe(tmp_path, "method.name=pcgrad", *base, "train.grad_accum=2"),
    }
    spawn_two_ranks(recipes, tmp_path)
    for method in recipes:
        rank0 = torch.load(tmp_path / f"{method}-rank0.pt", weights_only=True)
        rank1 = torch.load(tmp_path / f"{method}-rank1.pt", weights_only=True)
        assert torch.equal(rank0, rank1), method
        single = _step(make_recipe(tmp_path, f"method.name={method}", *base))
        for seed in range(3):
            single.update(*_batch(seed, 32, 4), measure=True)
        assert torch.allclose(rank0, _weights(single), atol=2e-5), method


def test_training_with_accumulation_resumes_exactly(tmp_path: Path, digits_shards: Path) -> None:
    overrides = ["method.name=pcgrad", "train.grad_accum=4", "train.conflict_every=2"]
    recipe = make_recipe(tmp_path, *overrides, shards=str(digits_shards))
    whole = fit(recipe, tmp_path / "whole", CPU_CTX, show=False)
    halted = make_recipe(tmp_path, *overrides, "train.steps=3", shards=str(digits_shards))
    fit(halted, tmp_path / "split", CPU_CTX, show=False)
    resumed = fit(recipe, tmp_path / "split", CPU_CTX, resume=True, show=False)
    assert torch.equal(_weights(whole), _weights(resumed))
    assert whole.steps_done == 6


@pytest.mark.parametrize("method", ["uw", "famo", "pcgrad"])
def test_proportional_micro_batches_equal_one_pass_over_the_same_chunks(
    tmp_path: Path, method: str
) -> None:
    """Log-SNR clusters of unequal width, proportional chunks: two micro-batches give the
    update of one pass over a batch of the same composition (the whole step is handed the
    split step's chunks), grouped per-cluster gradients equal k backward passes."""
    base = (f"method.name={method}", "clustering.objective=snr", "clustering.sampling=proportional")
    split = _step(make_recipe(tmp_path, *base, "train.grad_accum=2"))
    whole = _step(make_recipe(tmp_path, *base))
    backward = _step(
        make_recipe(tmp_path, *base, "train.grad_accum=2", "train.task_grads=backward")
    )
    layout = split.layout(16)
    assert len(set(layout.sizes)) > 1, "unequal chunks"
    same = ChunkLayout(
        tuple(2 * n for n in layout.sizes), layout.cluster, layout.counts, (torch.arange(16),)
    )
    whole._layouts[16] = same
    for seed in range(3):
        x0, y, _, _, noise = _batch(seed, 16, 4)
        torch.manual_seed(seed)
        t, cluster = split.timesteps(16)
        assert torch.equal(cluster, layout.cluster)
        for step in (whole, split, backward):
            step.update(x0, y, t, cluster, noise, measure=False)
    assert torch.allclose(_weights(whole), _weights(split), atol=2e-6)
    assert torch.allclose(_weights(backward), _weights(split), atol=2e-6)


def test_proportional_sampling_refuses_vmap_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(AntError, match="needs stratified timestep sampling"):
        _step(
            make_recipe(
                tmp_path,
                "method.name=pcgrad",
                "clustering.sampling=proportional",
                "train.task_grads=vmap",
            )
        )
