"""Tests of the DiT family (Peebles & Xie 2023): sizes, shapes, adaLN-Zero, labels, guidance."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import timm.layers.attention
import timm.layers.config
import torch
from timm.models.vision_transformer import Attention

import ant.models.plugin
from ant.core.plugins import AntPluginManager, collect
from ant.models import DIT_CONFIGS, DiT
from ant.models.embeddings import LabelEmbedder, sincos_pos_embed_2d, timestep_frequency_embedding

# DiT paper, Table 4: parameters of the 256×256 models (32×32×4 latents, 1000 classes).
PUBLISHED_PARAMS = {
    "DiT-S/2": 33.0e6,
    "DiT-B/2": 130.3e6,
    "DiT-L/2": 458.0e6,
    "DiT-XL/2": 675.0e6,
}
FACTORY_OPTIONS = {
    "input_size",
    "in_channels",
    "num_classes",
    "class_dropout",
    "learn_sigma",
    "freq_shift",
    "routing",
}


def micro(name: str = "DiT-Micro/2", **options: Any) -> DiT:
    """A micro DiT on 8×8×4 inputs with 10 classes, unless ``options`` say otherwise."""
    torch.manual_seed(0)
    return DIT_CONFIGS[name](**{"input_size": 8, "in_channels": 4, "num_classes": 10, **options})


def perturb(model: torch.nn.Module) -> None:
    """Move every trainable weight away from its (partly zero) initialisation."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def inputs(model: DiT, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    size = model.input_size
    x = torch.randn(batch, model.in_channels, size, size, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    y = torch.randint(0, max(model.num_classes, 1), (batch,), generator=generator)
    return x, t, y


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_counts_match_the_paper(name: str) -> None:
    with torch.device("meta"):
        model = DIT_CONFIGS[name](input_size=32, in_channels=4, num_classes=1000, learn_sigma=True)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - PUBLISHED_PARAMS[name]) / PUBLISHED_PARAMS[name] < 0.01, count


@pytest.mark.parametrize(
    ("name", "input_size", "in_channels", "learn_sigma", "num_classes"),
    [
        ("DiT-Micro/2", 8, 4, True, 10),
        ("DiT-Micro/2", 8, 4, False, 10),
        ("DiT-Micro/4", 16, 3, True, 5),
        ("DiT-Micro/8", 16, 1, False, 0),
        ("DiT-T/2", 16, 1, True, 10),
    ],
)
def test_output_shape(
    name: str, input_size: int, in_channels: int, learn_sigma: bool, num_classes: int
) -> None:
    model = micro(
        name,
        input_size=input_size,
        in_channels=in_channels,
        learn_sigma=learn_sigma,
        num_classes=num_classes,
    )
    x, t, y = inputs(model, batch=2)
    out_channels = 2 * in_channels if learn_sigma else in_channels
    assert model.out_channels == out_channels
    assert model(x, t, y).shape == (2, out_channels, input_size, input_size)
    assert model(x, t.float() / 7, y).shape == (2, out_channels, input_size, input_size)
    assert model(x, torch.tensor(5), None).shape == (2, out_channels, input_size, input_size)


def test_input_size_must_be_a_multiple_of_the_patch() -> None:
    with pytest.raises(ValueError, match="multiple of patch_size"):
        DiT(input_size=10, patch_size=4, hidden_size=64, depth=1, num_heads=2)


def test_unpatchify_places_each_token_value() -> None:
    model = micro("DiT-Micro/4", input_size=8, in_channels=1, learn_sigma=True)
    g, p, c = model.grid_size, model.patch_size, model.out_channels
    tokens = torch.arange(g * g * p * p * c, dtype=torch.float32).reshape(1, g * g, p * p * c)
    image = model.unpatchify(tokens)
    for gi, gj, pi, pj, ch in [(0, 0, 0, 0, 0), (1, 0, 2, 3, 1), (0, 1, 3, 1, 0), (1, 1, 1, 2, 1)]:
        expected = tokens[0, gi * g + gj, (pi * p + pj) * c + ch]
        assert image[0, ch, gi * p + pi, gj * p + pj] == expected


def test_positional_embedding_is_fixed_sincos() -> None:
    model = micro("DiT-Micro/2", input_size=16)
    pos = model.pos_embed
    assert not pos.requires_grad
    assert pos.shape == (1, 64, 64)
    grid, dim = model.grid_size, pos.shape[-1]
    quarter = dim // 4
    for i, j, k in [(0, 0, 0), (0, 5, 3), (7, 2, 15), (3, 6, 9), (5, 5, 1)]:
        omega = 10_000.0 ** (-k / quarter)
        row = pos[0, i * grid + j]
        closed_form = [
            math.sin(j * omega),
            math.cos(j * omega),
            math.sin(i * omega),
            math.cos(i * omega),
        ]
        actual = [row[k], row[quarter + k], row[2 * quarter + k], row[3 * quarter + k]]
        for a, b in zip(actual, closed_form, strict=True):
            assert float(a) == pytest.approx(b, abs=1e-5)
    assert torch.equal(pos[0], sincos_pos_embed_2d(dim, grid))

    before = pos.detach().clone()
    perturb(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    x, t, y = inputs(model)
    model(x, t, y).square().mean().backward()
    optimizer.step()
    assert pos.grad is None
    assert torch.equal(model.pos_embed, before)


def test_timestep_frequency_embedding_closed_form() -> None:
    t = torch.tensor([0, 3, 999])
    emb = timestep_frequency_embedding(t, dim=8)
    for row, step in enumerate([0, 3, 999]):
        for k in range(4):
            freq = math.exp(-math.log(10_000.0) * k / 4)
            assert float(emb[row, k]) == pytest.approx(math.cos(step * freq), abs=1e-4)
            assert float(emb[row, 4 + k]) == pytest.approx(math.sin(step * freq), abs=1e-4)


def test_adaln_zero_init_gives_zero_output_and_identity_blocks() -> None:
    model = micro()
    x, t, y = inputs(model)
    out = model(x, t, y)
    assert torch.equal(out, torch.zeros_like(out))
    h = torch.randn(3, model.grid_size**2, 64)
    c = torch.randn(3, 64)
    for block in model.blocks:
        assert torch.equal(block(h, c), h)
    perturb(model)
    assert model(x, t, y).abs().max() > 0


def embedded_labels(model: DiT, y: torch.Tensor) -> torch.Tensor:
    """The label indices the model actually looks up in its embedding table."""
    assert model.y_embedder is not None
    seen: list[torch.Tensor] = []
    handle = model.y_embedder.embedding_table.register_forward_pre_hook(
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
    assert model.y_embedder is not None
    assert model.y_embedder.embedding_table.num_embeddings == 11
    y = torch.tensor([0, 3, 9, 5])
    model.train()
    assert torch.equal(embedded_labels(model, y), torch.full((4,), 10))
    model.eval()
    assert torch.equal(embedded_labels(model, y), y)


def test_label_embedder_dropout_rate_and_forced_drops() -> None:
    torch.manual_seed(3)
    embedder = LabelEmbedder(num_classes=7, hidden_size=8, dropout_prob=0.3)
    labels = torch.randint(0, 7, (4000,))
    dropped = embedder.drop_labels(labels) == 7
    assert 0.26 < dropped.float().mean() < 0.34
    embedder.eval()
    forced = torch.tensor([1, 0, 1, 0])
    out = embedder(torch.tensor([2, 3, 4, 5]), force_drop_ids=forced)
    table = embedder.embedding_table.weight
    assert torch.equal(out, table[torch.tensor([7, 3, 7, 5])])


def test_no_null_label_without_class_dropout_and_unconditional_model() -> None:
    model = micro(class_dropout=0.0)
    assert model.null_label is None
    assert model.y_embedder is not None
    assert model.y_embedder.embedding_table.num_embeddings == 10
    x, t, _ = inputs(model)
    with pytest.raises(ValueError, match="null label"):
        model(x, t, None)
    unconditional = micro(num_classes=0)
    assert unconditional.y_embedder is None
    perturb(unconditional)
    x, t, y = inputs(unconditional)
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
        plain = model.forward_with_cfg(*doubled, cfg_scale=1.0)
        guided = model.forward_with_cfg(*doubled, cfg_scale=4.0)
    assert not torch.allclose(cond, uncond, atol=1e-3)
    torch.testing.assert_close(plain[:3], cond, atol=1e-5, rtol=1e-5)
    eps = slice(0, model.in_channels)
    expected = uncond[:, eps] + 4.0 * (cond[:, eps] - uncond[:, eps])
    torch.testing.assert_close(guided[:3, eps], expected, atol=1e-4, rtol=1e-4)
    # The 4th latent channel is guided too (the reference code guided channels 0-2 only).
    assert not torch.allclose(guided[:3, 3], cond[:, 3], atol=1e-3)
    torch.testing.assert_close(guided[:3, model.in_channels :], cond[:, model.in_channels :])
    assert torch.equal(guided[:3], guided[3:])


def test_gradients_reach_every_trainable_parameter() -> None:
    model = micro().train()
    perturb(model)
    x, t, y = inputs(model, batch=4)
    model(x, t, y).square().mean().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_fused_attention_is_on_even_when_timm_disables_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timm.layers.config, "_USE_FUSED_ATTN", 0)
    model = micro()
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attentions) == 2
    assert all(attn.fused_attn for attn in attentions)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting_sdpa(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(timm.layers.attention.F, "scaled_dot_product_attention", counting_sdpa)
    model(*inputs(model))
    assert len(calls) == 2


def test_plugin_registers_every_named_config() -> None:
    manager = AntPluginManager()
    manager.register_from(ant.models.plugin, "ant.models.plugin", "ant-diffusion")
    registry = collect(manager, "model")
    expected = {
        f"DiT-{size}/{patch}" for size in ("S", "B", "L", "XL", "T", "Micro") for patch in (2, 4, 8)
    }
    assert set(registry.names()) == expected
    for entry in registry:
        assert entry.description.startswith(f"{entry.name}: ")
        assert "Peebles & Xie 2023" in entry.description
        assert not entry.accepts_any_option()
        assert set(entry.parameters()) == FACTORY_OPTIONS
    l2 = registry.get("DiT-L/2")
    assert (
        l2.description == "DiT-L/2: 24 blocks, width 1024, 16 heads, patch 2 (Peebles & Xie 2023)"
    )
    signature = inspect.signature(l2.factory)
    assert signature.parameters["input_size"].default == 32
    model = registry.build("DiT-Micro/4", input_size=8, in_channels=2, learn_sigma=False)
    assert isinstance(model, DiT)
    assert (len(model.blocks), model.patch_size, model.out_channels) == (2, 4, 2)
