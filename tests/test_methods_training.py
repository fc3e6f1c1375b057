"""Methods in the trainer: per-cluster gradient paths, DDP identity, resume, every method runs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ant.core.plugins import registry
from ant.core.runtime import Runtime
from ant.methods import GradientMethod
from ant.recipe import Recipe, load_recipe
from ant.training.loop import build_train_step, fit
from ant.training.step import TrainStep

CPU_CTX = Runtime()

RECIPE = """
model: {{name: DiT-Micro/2, input_size: 8, in_channels: 1, num_classes: 10, class_dropout: 0.0}}
diffusion: {{timesteps: 100, schedule: cosine, learn_sigma: true}}
data: {{shards: {shards}, num_workers: 0, shuffle_buffer: 100}}
clustering: {{objective: uniform, k: 4}}
method: {{name: vanilla}}
optim: {{lr: 1e-3}}
train: {{steps: 6, global_batch_size: 16, log_every: 1, ckpt_every: 3, ema_decay: 0.9}}
sample: {{num: 4, steps: 2, sampler: ddim}}
"""

ALL_METHODS = [
    "vanilla",
    "uw",
    "pcgrad",
    "cagrad",
    "imtl",
    "nashmtl",
    "famo",
    "dwa",
    "rlw",
]
WEIGHTINGS = ["minsnr", "p2", "debias", "edm2_uncertainty"]
# Each cluster method alone, and each weighting inside vanilla averaging across clusters.
COMPONENTS = [f"method.name={name}" for name in ALL_METHODS] + [
    f"weighting.name={name}" for name in WEIGHTINGS
]


def make_recipe(tmp_path: Path, *overrides: str, shards: str = "unused") -> Recipe:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(shards=shards))
    return load_recipe(str(path), overrides)


class Summed(GradientMethod):
    """Sums the per-cluster gradients: must reproduce the vanilla update exactly."""

    def combine_grads(self, grads: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        return grads.sum(0)


def _batch(seed: int, size: int, k: int, steps: int = 100) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(size, 1, 8, 8, generator=gen) * 2 - 1
    y = torch.randint(0, 10, (size,), generator=gen)
    cluster = torch.arange(size) // (size // k)
    t = cluster * (steps // k) + torch.randint(0, steps // k, (size,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    return x0, y, t, cluster, noise


def _step(recipe: Recipe) -> TrainStep:
    step, _ = build_train_step(recipe, CPU_CTX)
    return step


def _same(a: object, b: object) -> bool:
    """Equality of state-dict values: tensors exactly, containers element by element."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _weights(step: TrainStep) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in step.model.parameters()])


@pytest.mark.parametrize("mode", ["vmap", "backward"])
def test_summed_cluster_gradients_equal_the_vanilla_update(tmp_path: Path, mode: str) -> None:
    vanilla = _step(make_recipe(tmp_path, "clustering.sampling=stratified", "method.name=uw"))
    vanilla.method = Summed(4)  # loss path below uses combine = mean, same as vanilla
    summed = _step(make_recipe(tmp_path, "method.name=uw", f"train.task_grads={mode}"))
    summed.method = Summed(4)
    x0, y, t, cluster, noise = _batch(0, 16, 4)
    vanilla.method.wants_grads = lambda step: False  # type: ignore[method-assign]
    vanilla.update(x0, y, t, cluster, noise, measure=False)
    summed.update(x0, y, t, cluster, noise, measure=False)
    assert torch.allclose(_weights(vanilla), _weights(summed), atol=1e-6)
    assert not torch.equal(_weights(summed), _weights(_step(make_recipe(tmp_path))))


def test_vmap_and_backward_give_the_same_pcgrad_update(tmp_path: Path) -> None:
    steps = [
        _step(make_recipe(tmp_path, "method.name=pcgrad", f"train.task_grads={mode}"))
        for mode in ("vmap", "backward")
    ]
    for seed in range(2):
        batch = _batch(seed, 16, 4)
        for step in steps:
            step.update(*batch, measure=False)
    assert torch.allclose(_weights(steps[0]), _weights(steps[1]), atol=1e-5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ddp_worker(rank: int, port: int, recipes: dict[str, dict[str, object]], out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ctx = Runtime(rank=rank, world_size=2, local_rank=rank)
        for method, recipe in recipes.items():
            step, _ = build_train_step(Recipe.model_validate(recipe), ctx)
            step.model = torch.nn.parallel.DistributedDataParallel(step.model)
            for seed in range(3):
                x0, y, t, cluster, noise = _batch(seed, 32, 4)
                mine = (torch.arange(32) // 4) % 2 == rank  # half of every cluster chunk
                step.update(x0[mine], y[mine], t[mine], cluster[mine], noise[mine], measure=True)
            torch.save(_weights(step), f"{out}/{method}-rank{rank}.pt")
        dist.barrier()  # neither rank tears gloo down while the other still reduces
    finally:
        dist.destroy_process_group()


def spawn_two_ranks(recipes: dict[str, Recipe], out: Path) -> None:
    """Train every recipe 3 steps on 2 gloo ranks; weights go to ``out/<label>-rank<r>.pt``."""
    mp.spawn(
        _ddp_worker,
        args=(_free_port(), {m: r.model_dump(mode="json") for m, r in recipes.items()}, str(out)),
        nprocs=2,
        join=True,
    )


# Methods whose update is linear in the rank-averaged per-cluster gradients (or losses) match one
# process on the whole batch; FAMO's log-loss objective is not linear in the losses, and RLW and
# DWA are checked for rank identity only.
DDP_METHODS = {
    "pcgrad": True,
    "cagrad": True,
    "imtl": True,
    "nashmtl": True,
    "uw": True,
    "famo": False,
    "rlw": False,
    "dwa": False,
}


def test_two_gloo_ranks_apply_identical_updates(tmp_path: Path) -> None:
    """Both ranks end with the same weights after three steps, and, where the update is linear
    in rank averages, the weights of one process on the whole batch (rank r holds half of every
    cluster's chunk)."""
    recipes = {}
    for method in DDP_METHODS:
        overrides = [f"method.name={method}", "train.global_batch_size=32"]
        if method == "nashmtl":
            overrides.append("method.update_every=2")
        if method == "dwa":
            overrides.append("method.period=1")
        recipes[method] = make_recipe(tmp_path, *overrides)
    spawn_two_ranks(recipes, tmp_path)
    for method, like_one_process in DDP_METHODS.items():
        rank0 = torch.load(tmp_path / f"{method}-rank0.pt", weights_only=True)
        rank1 = torch.load(tmp_path / f"{method}-rank1.pt", weights_only=True)
        assert torch.equal(rank0, rank1), method
        single = _step(recipes[method])
        for seed in range(3):
            single.update(*_batch(seed, 32, 4), measure=True)
        if like_one_process:
            assert torch.allclose(rank0, _weights(single), atol=2e-5), method


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_method_trains_and_resumes_exactly(
    tmp_path: Path, digits_shards: Path, component: str
) -> None:
    recipe = make_recipe(tmp_path, component, shards=str(digits_shards))
    whole = fit(recipe, tmp_path / "whole", CPU_CTX, show=False)
    halted = make_recipe(tmp_path, component, "train.steps=3", shards=str(digits_shards))
    fit(halted, tmp_path / "split", CPU_CTX, show=False)
    resumed = fit(recipe, tmp_path / "split", CPU_CTX, resume=True, show=False)
    assert torch.equal(_weights(whole), _weights(resumed))
    for key, value in whole.method.state_dict().items():
        assert _same(value, resumed.method.state_dict()[key]), key
    if whole.weighting is not None:
        assert resumed.weighting is not None
        for key, value in whole.weighting.state_dict().items():
            assert _same(value, resumed.weighting.state_dict()[key]), key
    kind, name = component.split(".name=")
    assert registry(kind).get(name).name == name


@pytest.mark.parametrize(
    "options",
    [(), ("train.grad_accum=2",), ("train.conflict_every=1",)],
    ids=["plain", "accumulated", "task-grads"],
)
def test_famo_same_batch_re_evaluates_the_very_batch(tmp_path: Path, options: tuple) -> None:
    """With a zero learning rate the update changes nothing, so the same batch evaluated again
    (same noise, timesteps, labels and label dropout) has the same losses and FAMO's logits do
    not move; the losses of the next batch differ, so with ``cross_batch`` they do."""
    base = ("method.name=famo", "model.class_dropout=0.5", *options)
    logits, streams = {}, []
    for delta in ("same_batch", "cross_batch"):
        step = _step(make_recipe(tmp_path, *base, f"method.delta={delta}"))
        for group in step.optimizer.param_groups:
            group["lr"] = 0.0
        torch.manual_seed(0)
        with torch.no_grad():  # off adaLN-zero, so that labels and their dropout matter
            for param in step.model.parameters():
                param.add_(0.1 * torch.randn_like(param))
        for seed in range(3):
            x0, y, t, cluster, noise = _batch(seed, 16, 4)
            step.update(x0, y, t, cluster, noise, measure=False)
        assert step.method.steps == (3 if delta == "same_batch" else 2)
        logits[delta] = step.method.logits.clone()
        streams.append(torch.get_rng_state())
    # The re-evaluation leaves the trainer's random stream as the pass left it.
    assert torch.equal(streams[0], streams[1])
    exact = options == ()
    limit = 0.0 if exact else 1e-5
    assert float(logits["same_batch"].abs().max()) <= limit
    assert float(logits["cross_batch"].abs().max()) > 1e-3
