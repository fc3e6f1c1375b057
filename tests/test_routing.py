"""Denoising Task Routing: the masks, the routed block, ratio 1 as the unrouted model, routing
under per-cluster gradients, original timesteps in respaced samplers, training and the recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ant.core.errors import AntError
from ant.diffusion import GaussianDiffusion
from ant.diffusion.samplers import sample
from ant.models.dit import DiT
from ant.models.routing import RoutingSpec, TaskRouting, active_channels, route, routing_masks
from ant.recipe.build import build_model
from ant.sampling.loading import load_sampling_model
from ant.training.grouped import GroupedGrads
from ant.training.loop import fit
from ant.training.step import Batch

from .helpers import assert_one_line_error, run_ant
from .test_init_weights import tiny_dit
from .test_methods_training import _batch, _step
from .test_methods_training import make_recipe as method_recipe
from .test_training import CPU_CTX, make_recipe
from .test_training_grouped import _perturbed


def micro(routing: RoutingSpec | None = None, seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    return _perturbed(tiny_dit(in_channels=1, routing=routing)).eval()  # type: ignore[return-value]


@pytest.mark.parametrize(("channels", "ratio"), [(64, 0.8), (1152, 0.8), (100, 0.33), (7, 0.5)])
def test_the_window_slides_from_the_first_to_the_last_channels(channels: int, ratio: float) -> None:
    timesteps, alpha = 1000, 4.0
    masks = routing_masks(timesteps, channels, ratio, alpha)
    width = int(channels * ratio)
    assert masks.shape == (timesteps, channels)
    assert bool((masks.sum(1) == width).all()), "every timestep uses int(D * ratio) channels"
    assert torch.equal(masks[0], (torch.arange(channels) < width).float())
    assert torch.equal(masks[-1], (torch.arange(channels) >= channels - width).float())
    for t in (1, 250, 500, 777):
        start = round((t / (timesteps - 1)) ** alpha * (channels - width))
        ones = masks[t].nonzero().squeeze(1)
        assert ones.tolist() == list(range(start, start + width)), f"one window at t={t}"
    starts = masks.argmax(1)
    assert bool((starts[1:] >= starts[:-1]).all())


def test_neighbouring_timesteps_share_more_channels_than_distant_ones() -> None:
    masks = routing_masks(1000, 256, 0.8, 4.0)
    overlap = masks @ masks.T
    assert overlap[0, 1] == overlap[0, 0] == active_channels(256, 0.8)
    assert overlap[500, 501] > overlap[500, 999] > overlap[0, 999]


def test_a_block_sees_the_active_channels_and_the_rest_is_carried_past() -> None:
    model = micro()
    block = model.blocks[0]
    x = torch.randn(3, 16, 64)
    c = torch.randn(3, 64)
    mask = routing_masks(100, 64, 0.5, 4.0)[torch.tensor([0, 40, 99])]
    with torch.no_grad():
        out = route(x, mask, block, c)
        inside = block(x * mask[:, None, :], c)
    carried = mask[:, None, :].expand_as(x) == 0
    assert torch.equal(out[carried], inside[carried] + x[carried])
    assert torch.equal(out[~carried], inside[~carried])
    with torch.no_grad():  # the block reads nothing of the inactive channels
        poked = x + 5.0 * (1 - mask[:, None, :]) * torch.randn_like(x)
        moved = route(poked, mask, block, c) - out
    torch.testing.assert_close(moved, (poked - x) * (1 - mask[:, None, :]))


def test_ratio_one_is_exactly_the_unrouted_model() -> None:
    plain = micro()
    routed = micro(RoutingSpec(ratio=1.0, alpha=4.0, timesteps=1000))
    routed.load_state_dict(plain.state_dict())
    x = torch.randn(4, 1, 8, 8)
    t = torch.tensor([0, 1, 500, 999])
    y = torch.tensor([0, 3, 5, 9])
    with torch.no_grad():
        assert torch.equal(routed(x, t, y), plain(x, t, y))
        other = micro(RoutingSpec(ratio=0.5, alpha=4.0, timesteps=1000))
        other.load_state_dict(plain.state_dict())
        assert not torch.allclose(other(x, t, y), plain(x, t, y), atol=1e-3)


def test_the_masks_are_not_in_checkpoints() -> None:
    routed = micro(RoutingSpec(0.8, 4.0, 1000))
    assert set(routed.state_dict()) == set(micro().state_dict())
    assert isinstance(routed.routing, TaskRouting) and routed.routing.masks.shape == (1000, 64)


def test_respaced_samplers_route_by_the_original_timestep() -> None:
    model = micro(RoutingSpec(0.8, 4.0, 100))
    assert model.routing is not None
    seen: list[torch.Tensor] = []
    model.routing.register_forward_hook(lambda _m, args, _out: seen.append(args[0].clone()))
    diffusion = GaussianDiffusion.from_schedule("cosine", 100, learn_sigma=True)
    sample(
        lambda x, t: model(x, t, torch.zeros(x.shape[0], dtype=torch.long)),
        diffusion,
        (2, 1, 8, 8),
        steps=5,
        method="ddim",
        generator=torch.Generator().manual_seed(0),
    )
    expected = diffusion.respaced(5).timestep_map.flip(0)
    assert torch.equal(torch.stack([t[0] for t in seen]), expected)
    assert int(expected.max()) > 5, "the original indices, not the respaced ones"


def test_routing_composes_with_grouped_and_vmap_cluster_gradients(tmp_path: Path) -> None:
    """The k per-cluster gradients of a routed DiT (label dropout on, same draws) agree across
    the grouped pass, vmap and k backward passes."""
    rows = {}
    for mode in ("grouped", "vmap", "backward"):
        step = _step(
            method_recipe(
                tmp_path,
                "method.name=pcgrad",
                "model.class_dropout=0.3",
                "model.routing={ratio: 0.5, alpha: 4.0}",
                f"train.task_grads={mode}",
            )
        )
        assert step.model.routing is not None
        _perturbed(step.model)
        if mode == "grouped":
            assert GroupedGrads(step.model).uncovered == []
        x0, y, t, cluster, noise = _batch(0, 16, 4)
        batch = Batch(x0, step.diffusion.q_sample(x0, t, noise), t, y, noise, cluster)
        torch.manual_seed(7)
        rows[mode] = step.task_gradients(step.task_parts(batch)).rows.clone()
    reference = rows["backward"]
    scale = float(reference.abs().max())
    assert scale > 0
    for mode in ("grouped", "vmap"):
        assert float((rows[mode] - reference).abs().max()) <= 1e-5 * scale, mode


def test_a_routed_run_trains_loads_and_samples(tmp_path: Path, digits_shards: Path) -> None:
    run = tmp_path / "run"
    recipe = make_recipe(tmp_path, digits_shards, "train.steps=4", "model.routing.ratio=0.8")
    assert recipe.model.routing is not None and recipe.model.routing.alpha == 4.0
    fit(recipe, run, CPU_CTX, show=False)
    loaded = load_sampling_model(run)
    model = loaded.model
    assert isinstance(model, DiT) and model.routing is not None
    assert model.routing.spec == RoutingSpec(0.8, 4.0, recipe.diffusion.timesteps)
    out = tmp_path / "grid.png"
    result = run_ant("sample", str(run), "--num", "4", "--steps", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.exists()


def test_routing_on_a_model_without_it_is_one_line(tmp_path: Path, digits_shards: Path) -> None:
    make_recipe(tmp_path, digits_shards)  # writes tmp_path/recipe.yaml
    path = tmp_path / "recipe.yaml"
    result = run_ant(
        "recipe", "validate", str(path), "model.name=ADM-Micro", "model.routing.ratio=0.8"
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "model.routing", "ADM-Micro", "no task routing")


def test_the_recipe_builds_the_masks_for_its_timesteps(tmp_path: Path, digits_shards: Path) -> None:
    recipe = make_recipe(
        tmp_path, digits_shards, "model.routing={ratio: 0.5, alpha: 2.0}", "diffusion.timesteps=50"
    )
    model = build_model(recipe)
    assert isinstance(model, DiT) and model.routing is not None
    assert model.routing.masks.shape == (50, model.pos_embed.shape[-1])
    with pytest.raises(AntError, match="ratio"):
        make_recipe(tmp_path, digits_shards, "model.routing.ratio=1.5")
