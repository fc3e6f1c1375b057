"""Tests of the ADM U-Net (Dhariwal & Nichol 2021): sizes, shapes, zero init, labels, guidance,
per-cluster vmap gradients, training through ant's trainer, checkpoints."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import ant.models.adm_plugin
from ant.core import checkpoint as ckpt
from ant.core.errors import AntError
from ant.core.logbook import read_metrics
from ant.core.plugins import AntPluginManager, collect
from ant.core.runtime import Runtime
from ant.diffusion.guidance import classifier_free_guidance
from ant.models.adm import ADMUNet
from ant.models.adm_plugin import ADM_CONFIGS
from ant.models.unet_blocks import AttentionBlock, ResBlock
from ant.recipe import Recipe, load_recipe
from ant.recipe.build import build_model
from ant.sampling.loading import load_sampling_model
from ant.training.loop import fit
from ant.training.task_grads import (
    task_grads_backward,
    task_grads_vmap,
    trainable,
    unfused_attention,
)

CPU_CTX = Runtime()

# Published sizes of the reference configurations, checked to the precision they are given at.
# (name, options, published count, tolerance, source)
PUBLISHED = [
    pytest.param(
        "ADM-ImageNet64",
        {"num_classes": 1000, "class_dropout": 0.0},
        295.90e6,
        0.005e6,
        id="ImageNet64: 295.90M, Karras et al. 2022 (EDM) Table 7",
    ),
    pytest.param(
        "ADM-FFHQ256",
        {"num_classes": 0},
        93e6,
        None,
        id="FFHQ256: '93M', README of P2-weighting (Choi et al. 2022)",
    ),
    pytest.param(
        "ADM",
        {
            "input_size": 512,
            "model_channels": 256,
            "num_classes": 1000,
            "class_dropout": 0.0,
        },
        559e6,
        0.5e6,
        id="ImageNet512: 559M, Epoch AI's entry for ADM (Dhariwal & Nichol 2021)",
    ),
]
FACTORY_OPTIONS = {
    "input_size",
    "in_channels",
    "num_classes",
    "class_dropout",
    "learn_sigma",
    "model_channels",
    "channel_mult",
    "num_res_blocks",
    "attention_resolutions",
    "num_head_channels",
    "num_heads",
    "dropout",
    "resblock_updown",
    "use_scale_shift_norm",
}

RECIPE = """
model: {{name: ADM-Micro, input_size: 8, in_channels: 1, num_classes: 10, channel_mult: [1, 2],
         num_res_blocks: 1}}
diffusion: {{timesteps: 1000, schedule: cosine, learn_sigma: true}}
data: {{shards: {shards}, num_workers: 0, shuffle_buffer: 100}}
clustering: {{objective: uniform, k: 5}}
method: {{name: vanilla}}
optim: {{lr: 1e-3}}
train: {{steps: 10, global_batch_size: 20, log_every: 1, ckpt_every: 1000, ema_decay: 0.9}}
sample: {{num: 10, steps: 4, sampler: ddim, cfg_scale: 2.0}}
"""


def micro(**options: Any) -> ADMUNet:
    """A micro ADM on 8×8×1 inputs with 10 classes, unless ``options`` say otherwise."""
    torch.manual_seed(0)
    return ADM_CONFIGS["ADM-Micro"](**options)


def perturb(model: torch.nn.Module) -> None:
    """Move every trainable weight away from its (partly zero) initialisation."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def inputs(model: ADMUNet, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    size = model.input_size
    x = torch.randn(batch, model.in_channels, size, size, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    y = torch.randint(0, max(model.num_classes, 1), (batch,), generator=generator)
    return x, t, y


def make_recipe(tmp_path: Path, shards: Path, *overrides: str) -> Recipe:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(shards=shards))
    return load_recipe(str(path), overrides)


@pytest.mark.parametrize(("name", "options", "published", "tolerance"), PUBLISHED)
def test_parameter_counts_match_the_published_figures(
    name: str, options: dict[str, Any], published: float, tolerance: float | None
) -> None:
    """The references have no null label (no classifier-free guidance) and learn sigma.

    ImageNet-64 is the model of the guided-diffusion README (Dhariwal & Nichol 2021); EDM
    (Karras et al. 2022) lists it at 295.90M in Table 7. The P2-weighting README calls its model
    a "lightweight version (93M parameter) of ADM": the figure is given to 2 digits, cut rather
    than rounded (we count 93.56M), so the count must lie in [93M, 94M). The 512 px ADM (same
    flags as 256 px, multipliers 0.5-1-1-2-2-4-4) is 559M in Epoch AI's data on notable models.
    """
    with torch.device("meta"):
        model = ADM_CONFIGS[name](in_channels=3, learn_sigma=True, **options)
    count = sum(p.numel() for p in model.parameters())
    if tolerance is None:
        assert math.floor(count / 1e6) * 1e6 == published, count
    else:
        assert abs(count - published) <= tolerance, count


@pytest.mark.parametrize(
    ("learn_sigma", "num_classes", "in_channels", "input_size"),
    [(True, 10, 1, 8), (False, 10, 1, 8), (True, 0, 3, 16), (False, 5, 2, 8)],
)
def test_output_shape(
    learn_sigma: bool, num_classes: int, in_channels: int, input_size: int
) -> None:
    model = micro(
        learn_sigma=learn_sigma,
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
    )
    x, t, y = inputs(model, batch=2)
    out_channels = 2 * in_channels if learn_sigma else in_channels
    expected = (2, out_channels, input_size, input_size)
    assert model.out_channels == out_channels
    assert model(x, t, y).shape == expected
    assert model(x, t.float() / 7, y).shape == expected
    assert model(x, torch.tensor(5), None).shape == expected


def test_architecture_follows_the_options() -> None:
    model = ADM_CONFIGS["ADM"](
        input_size=32,
        in_channels=3,
        model_channels=32,
        channel_mult="1,2,2",
        num_res_blocks=2,
        attention_resolutions=[16, 8],
        num_head_channels=-1,
        num_heads=2,
        resblock_updown=False,
        use_scale_shift_norm=False,
    )
    assert model.channel_mult == (1, 2, 2)
    resblocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    attentions = [m for m in model.modules() if isinstance(m, AttentionBlock)]
    # encoder 3 x 2, middle 2, decoder 3 x 3; plain resampling adds no residual blocks
    assert len(resblocks) == 6 + 2 + 9
    assert not any(r.up or r.down for r in resblocks)
    assert all(not r.use_scale_shift_norm for r in resblocks)
    # at 16 px and 8 px: encoder 2 + 2, decoder 3 + 3, middle 1
    assert len(attentions) == 11
    assert {a.heads for a in attentions} == {2}
    updown = ADM_CONFIGS["ADM"](input_size=32, model_channels=64, channel_mult=(1, 2, 2))
    resampling = [m for m in updown.modules() if isinstance(m, ResBlock) and (m.up or m.down)]
    assert len(resampling) == 4
    heads = {a.channels: a.heads for a in updown.modules() if isinstance(a, AttentionBlock)}
    assert heads == {64: 1, 128: 2}  # 64 channels per head at 32, 16 and 8 px
    assert ADM_CONFIGS["ADM"](input_size=32, model_channels=64).channel_mult == (1, 2, 2, 2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_size": 9}, "divisible by 2"),
        ({"model_channels": 48}, "multiple of 32"),
        ({"num_head_channels": 48}, "does not divide"),
        ({"num_res_blocks": 0}, "num_res_blocks"),
        ({"channel_mult": "1,x"}, "list of numbers"),
    ],
)
def test_impossible_architectures_are_one_line_errors(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ADM_CONFIGS["ADM-Micro"](**options)


def test_channel_mult_defaults_to_adm_by_input_size() -> None:
    with torch.device("meta"):
        assert ADM_CONFIGS["ADM"](input_size=256).channel_mult == (1, 1, 2, 2, 4, 4)
        assert ADM_CONFIGS["ADM"](input_size=64).channel_mult == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="no default channel_mult for input_size 24"):
        ADM_CONFIGS["ADM"](input_size=24)


def test_zero_init_gives_zero_output_and_identity_blocks() -> None:
    model = micro()
    x, t, y = inputs(model)
    out = model(x, t, y)
    assert torch.equal(out, torch.zeros_like(out))
    emb = torch.randn(3, 4 * model.model_channels)
    checked = 0
    for module in model.modules():
        if isinstance(module, ResBlock | AttentionBlock):
            h = torch.randn(3, module.channels, 4, 4)
        resamples = isinstance(module, ResBlock) and (module.up or module.down)
        if (
            isinstance(module, ResBlock)
            and module.channels == module.out_channels
            and not resamples
        ):
            assert torch.equal(module(h, emb), h)
            checked += 1
        if isinstance(module, AttentionBlock):
            assert torch.equal(module(h), h)
            checked += 1
    assert checked == 7  # 3 residual blocks that keep their width, 4 attention blocks
    perturb(model)
    assert model(x, t, y).abs().max() > 0


def embedded_labels(model: ADMUNet, y: torch.Tensor) -> torch.Tensor:
    """The label indices the model actually looks up in its embedding table."""
    assert model.label_embed is not None
    seen: list[torch.Tensor] = []
    handle = model.label_embed.embedding_table.register_forward_pre_hook(
        lambda _module, args: seen.append(args[0].clone())
    )
    x, t, _ = inputs(model, batch=y.shape[0])
    model(x, t, y)
    handle.remove()
    assert len(seen) == 1
    return seen[0]


def test_class_dropout_replaces_labels_by_null_in_training_only() -> None:
    model = micro(class_dropout=1.0)
    assert model.null_label == 10
    assert model.label_embed is not None
    assert model.label_embed.embedding_table.num_embeddings == 11
    y = torch.tensor([0, 3, 9, 5])
    model.train()
    assert torch.equal(embedded_labels(model, y), torch.full((4,), 10))
    model.eval()
    assert torch.equal(embedded_labels(model, y), y)


def test_class_conditional_vs_unconditional() -> None:
    conditional = micro().eval()
    perturb(conditional)
    x, t, y = inputs(conditional)
    assert not torch.allclose(conditional(x, t, y), conditional(x, t, (y + 1) % 10), atol=1e-4)
    null = torch.full_like(y, 10)
    assert torch.equal(conditional(x, t, None), conditional(x, t, null))

    no_null = micro(class_dropout=0.0)
    assert no_null.null_label is None
    assert no_null.label_embed is not None
    assert no_null.label_embed.embedding_table.num_embeddings == 10
    with pytest.raises(ValueError, match="null label"):
        no_null(x, t, None)

    unconditional = micro(num_classes=0)
    assert unconditional.label_embed is None and unconditional.null_label is None
    perturb(unconditional)
    assert torch.equal(unconditional(x, t, y), unconditional(x, t, None))


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_classifier_free_guidance(learn_sigma: bool) -> None:
    model = micro(learn_sigma=learn_sigma).eval()
    perturb(model)
    x, t, y = inputs(model)
    null = torch.full_like(y, 10)
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, null)
        doubled = (torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        guided = model.forward_with_cfg(*doubled, cfg_scale=3.0)
        sampler_guided = classifier_free_guidance(
            model, 3.0, null_label=10, learn_sigma=learn_sigma
        )(x, t, y)
    eps = slice(0, model.in_channels)
    expected = uncond[:, eps] + 3.0 * (cond[:, eps] - uncond[:, eps])
    torch.testing.assert_close(guided[:3, eps], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guided[:3, model.in_channels :], cond[:, model.in_channels :])
    assert torch.equal(guided[:3], guided[3:])
    torch.testing.assert_close(sampler_guided, guided[:3], atol=1e-5, rtol=1e-5)


def test_fused_and_explicit_attention_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    model = micro().eval()
    perturb(model)
    x, t, y = inputs(model)
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting_sdpa(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    with torch.no_grad():
        fused = model(x, t, y)
        assert len(calls) == 4  # at 4 px: 1 encoder, 1 middle and 2 decoder blocks
        with unfused_attention(model):
            assert not any(a.fused_attn for a in model.modules() if isinstance(a, AttentionBlock))
            explicit = model(x, t, y)
    assert len(calls) == 4
    assert all(a.fused_attn for a in model.modules() if isinstance(a, AttentionBlock))
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def _mse_chunk_loss(
    call: Any, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    per = (call(x, t, y) - target).square().flatten(1).mean(1)
    return per.mean(), per.detach()


def test_vmap_per_cluster_gradients_equal_k_backward_passes() -> None:
    model = micro().eval()  # no dropout, no label dropout: a deterministic loss
    perturb(model)
    k, n = 4, 3
    x, t, y = inputs(model, batch=k * n)
    target = torch.randn(
        k * n, model.out_channels, 8, 8, generator=torch.Generator().manual_seed(5)
    )

    def chunks(value: torch.Tensor) -> torch.Tensor:
        return value.reshape(k, n, *value.shape[1:])

    grads, per = task_grads_vmap(model, _mse_chunk_loss, [chunks(v) for v in (x, t, y, target)])
    params = [p for _, p in trainable(model)]
    per_ref = (model(x, t, y) - target).square().flatten(1).mean(1)
    reference = task_grads_backward(params, per_ref.reshape(k, n).mean(1))
    assert grads.shape == (k, sum(p.numel() for p in params))
    torch.testing.assert_close(per.reshape(-1), per_ref.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grads, reference, atol=1e-6, rtol=1e-4)
    assert all(a.fused_attn for a in model.modules() if isinstance(a, AttentionBlock))


def test_vmap_gradients_in_training_mode_with_dropout() -> None:
    model = micro(dropout=0.1, class_dropout=0.5).train()
    perturb(model)
    k, n = 2, 4
    x, t, y = inputs(model, batch=k * n)
    target = torch.zeros(k * n, model.out_channels, 8, 8)
    grads, _ = task_grads_vmap(
        model, _mse_chunk_loss, [v.reshape(k, n, *v.shape[1:]) for v in (x, t, y, target)]
    )
    assert grads.shape[0] == k
    assert bool(torch.isfinite(grads).all())
    assert not torch.equal(grads[0], grads[1])


def test_a_few_steps_on_digits_lower_the_loss_and_the_checkpoint_samples(
    tmp_path: Path, digits_shards: Path
) -> None:
    recipe = make_recipe(tmp_path, digits_shards, "train.steps=80", "train.ckpt_every=80")
    run = tmp_path / "run"
    step = fit(recipe, run, CPU_CTX, show=False)
    losses = [r["loss"] for r in read_metrics(run)]
    assert len(losses) == 80
    assert sum(losses[-15:]) / 15 < 0.7 * sum(losses[:5]) / 5
    assert (run / "samples" / "final.png").is_file()

    loaded = load_sampling_model(run)
    assert isinstance(loaded.model, ADMUNet) and loaded.step == 80
    ema = step.ema.state_dict()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, ema[key]), key


def test_gradient_method_trains_through_vmap(tmp_path: Path, digits_shards: Path) -> None:
    recipe = make_recipe(
        tmp_path,
        digits_shards,
        "method.name=pcgrad",
        "train.task_grads=vmap",
        "train.steps=3",
        "sample.num=2",
    )
    fit(recipe, tmp_path / "run", CPU_CTX, show=False)
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in records)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path, Path("unused"), "model.dropout=0.1")
    model = build_model(recipe).eval()
    perturb(model)
    state = {"model": model.state_dict(), "recipe": recipe.model_dump(mode="json"), "step": 7}
    path = ckpt.save_checkpoint(state, ckpt.checkpoint_path(tmp_path, 7))
    loaded = load_sampling_model(path, raw_weights=True)
    fresh = loaded.model.eval()
    assert isinstance(fresh, ADMUNet) and loaded.step == 7
    assert fresh.num_res_blocks == 1 and fresh.out_channels == 2
    x, t, y = inputs(fresh)
    with torch.no_grad():
        assert torch.equal(fresh(x, t, y), model(x, t, y))


def test_recipe_options_reach_the_model(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(shards="unused"))
    # switching model.name drops ADM-Micro's options; the ones set after it stay
    recipe = load_recipe(
        str(path), ["model.name=ADM-T", "model.attention_resolutions=[8, 4]", "model.dropout=0.2"]
    )
    model = build_model(recipe)
    assert isinstance(model, ADMUNet)
    assert (model.num_res_blocks, model.model_channels, model.channel_mult) == (2, 64, (1, 2))
    assert model.attention_resolutions == (8, 4)
    dropouts = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert dropouts == {0.2}
    with pytest.raises(AntError, match="did you mean 'num_res_blocks'"):
        load_recipe(str(path), ["model.num_resblocks=2"])
    bad = load_recipe(str(path), ["model.model_channels=40"])
    with pytest.raises(AntError, match=r"model 'ADM-Micro': .*multiple of 32"):
        build_model(bad)


def test_plugin_registers_every_named_config() -> None:
    manager = AntPluginManager()
    manager.register_from(ant.models.adm_plugin, "ant.models.adm_plugin", "ant-diffusion")
    registry = collect(manager, "model")
    assert set(registry.names()) == {"ADM", "ADM-ImageNet64", "ADM-FFHQ256", "ADM-T", "ADM-Micro"}
    for entry in registry:
        assert entry.description.startswith(f"{entry.name}: ")
        assert "\n" not in entry.description
        assert not entry.accepts_any_option()
        assert set(entry.parameters()) == FACTORY_OPTIONS
    assert "Dhariwal & Nichol 2021" in registry.get("ADM-ImageNet64").description
    assert "Choi et al. 2022" in registry.get("ADM-FFHQ256").description
    signature = inspect.signature(registry.get("ADM").factory)
    assert signature.parameters["learn_sigma"].default is True
    model = registry.build("ADM-T", learn_sigma=False, num_classes=0)
    assert isinstance(model, ADMUNet)
    assert (model.model_channels, model.channel_mult, model.out_channels) == (64, (1, 2), 1)
