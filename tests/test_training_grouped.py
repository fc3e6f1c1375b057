"""Grouped per-cluster gradients: exact against k backward passes, for every layer and model."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from ant.core.plugins import registry
from ant.models.unet_blocks import GroupNorm32
from ant.training.grouped import GroupedGrads
from ant.training.grouped_layers import GroupLayout
from ant.training.task_grads import gradient_cosines, gram_matrix, task_grads_backward, trainable
from tests.test_methods_training import _batch, _step, _weights, make_recipe


def _reference(
    module: nn.Module, loss_fn: object, group: torch.Tensor, k: int, seed: int
) -> torch.Tensor:
    params = [p for _, p in trainable(module)]
    torch.manual_seed(seed)
    per = loss_fn(module)  # type: ignore[operator]
    return task_grads_backward(params, torch.zeros(k).index_add(0, group, per))


def _grouped(
    module: nn.Module,
    loss_fn: object,
    layout: GroupLayout,
    seed: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    grouped = GroupedGrads(module)
    assert grouped.uncovered == []
    buffer = grouped.buffer(layout.k, dtype, torch.device("cpu"))
    sink = grouped.sink(buffer)
    torch.manual_seed(seed)
    with grouped.capture(sink, layout):
        per = loss_fn(module)  # type: ignore[operator]
        torch.zeros(layout.k).index_add(0, layout.sample_group, per).sum().backward()
    sink.finish()
    return buffer


def _layouts(batch: int, k: int) -> list[GroupLayout]:
    unequal = torch.sort(torch.randint(0, k, (batch,), generator=torch.Generator().manual_seed(3)))
    return [GroupLayout.chunks(k, batch, torch.device("cpu")), GroupLayout.sorted(unequal[0], k)]


def _perturbed(model: nn.Module) -> nn.Module:
    """Move zero-initialised layers off zero, so that every gradient is non-trivial."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


@pytest.mark.parametrize("name", ["DiT-Micro/2", "ADM-Micro"])
@pytest.mark.parametrize("layout_index", [0, 1], ids=["equal", "unequal"])
def test_grouped_gradients_equal_k_backward_passes_on_the_models(
    name: str, layout_index: int
) -> None:
    """Label dropout on (train mode, same draws in both runs), learned sigma, every layer type of
    DiT (patch conv, adaLN, timestep MLP, label table) and ADM (3x3 convs, GroupNorm32)."""
    model = _perturbed(
        registry("model").build(
            name, input_size=8, in_channels=1, num_classes=10, class_dropout=0.3, learn_sigma=True
        )
    ).train()
    batch, k = 16, 4
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 8, 8, generator=gen)
    t = torch.randint(0, 100, (batch,), generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    layout = _layouts(batch, k)[layout_index]

    def loss(module: nn.Module) -> torch.Tensor:
        return module(x, t, y).pow(2).mean(dim=(1, 2, 3))

    reference = _reference(model, loss, layout.sample_group, k, seed=5)
    grads = _grouped(model, loss, layout, seed=5)
    assert (grads - reference).abs().max() <= 1e-6 * reference.abs().max()
    exact = reference.double() @ reference.double().T
    gram = gram_matrix(grads)
    assert (gram - exact).abs().max() <= 1e-5 * exact.abs().max()


class Zoo(nn.Module):
    """Every covered layer type with awkward options, a layer called twice and one shared."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 8, padding_idx=0)
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1, groups=1)
        self.grouped_conv = nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2, bias=False)
        self.conv1d = nn.Conv1d(8, 8, 2, stride=2)
        self.gn = nn.GroupNorm(2, 8)
        self.ln = nn.LayerNorm(8)
        self.twice = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3, bias=False)

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h = self.grouped_conv(self.conv(image))  # [B, 8, 4, 4]
        h = self.gn(h) + self.embed(label)[:, :, None, None]
        seq = self.conv1d(h.flatten(2)).transpose(1, 2)  # [B, 8, 8]
        seq = self.twice(torch.tanh(self.twice(self.ln(seq))))
        return self.head(seq).pow(2).mean(dim=(1, 2))


def test_every_layer_type_and_a_layer_called_twice_are_exact() -> None:
    torch.manual_seed(0)
    model = _perturbed(Zoo())
    batch, k = 12, 3
    image = torch.randn(batch, 3, 8, 8)
    label = torch.randint(0, 7, (batch,))
    label[:3] = 0  # the padding row gets no gradient

    def loss(module: nn.Module) -> torch.Tensor:
        return module(image, label)  # type: ignore[no-any-return]

    for layout in _layouts(batch, k):
        reference = _reference(model, loss, layout.sample_group, k, seed=0)
        grads = _grouped(model, loss, layout, seed=0)
        assert torch.allclose(grads, reference, atol=1e-6, rtol=1e-5)


def test_adm_group_norm_in_float32_is_covered() -> None:
    norm = _perturbed(GroupNorm32(32))
    x = torch.randn(8, 32, 2, 2)
    layout = GroupLayout.chunks(2, 8, torch.device("cpu"))

    def loss(module: nn.Module) -> torch.Tensor:
        return module(x).pow(3).mean(dim=(1, 2, 3))

    reference = _reference(norm, loss, layout.sample_group, 2, seed=0)
    grads = _grouped(norm, loss, layout, seed=0)
    assert torch.allclose(grads, reference, atol=1e-6)


def test_every_registered_model_is_fully_covered() -> None:
    """All DiT and ADM configurations, built on the meta device (no memory for the weights)."""
    models = registry("model")
    for name in models.names():
        with torch.device("meta"):
            model = models.build(
                name, input_size=32, in_channels=4, num_classes=1000, class_dropout=0.1
            )
        assert GroupedGrads(model).uncovered == [], name


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.scale)


class Sneaky(nn.Module):
    """Uses a covered Linear's weight outside the Linear's forward."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + x @ self.linear.weight.T


def test_uncovered_layers_are_named_and_a_stray_gradient_raises() -> None:
    assert GroupedGrads(Custom()).uncovered == ["Custom"]
    sneaky = Sneaky()
    grouped = GroupedGrads(sneaky)
    assert grouped.uncovered == []
    layout = GroupLayout.chunks(2, 4, torch.device("cpu"))
    sink = grouped.sink(grouped.buffer(2, torch.float32, torch.device("cpu")))
    with pytest.raises(RuntimeError, match="ordinary gradient"), grouped.capture(sink, layout):
        sneaky(torch.randn(4, 4)).sum().backward()


def test_a_model_grouped_gradients_do_not_cover_falls_back_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ant.training.grouped_layers.FORMS", {})
    with caplog.at_level(logging.WARNING):
        step = _step(make_recipe(tmp_path, "method.name=pcgrad"))
    assert step.task_grads == "vmap"
    assert "does not cover layer types" in caplog.text and "Linear" in caplog.text


def test_bf16_autocast_matches_the_ordinary_bf16_backward() -> None:
    model = _perturbed(
        registry("model").build(
            "DiT-Micro/2", input_size=8, in_channels=1, num_classes=10, class_dropout=0.0
        )
    )
    x, t, y = torch.randn(8, 1, 8, 8), torch.randint(0, 100, (8,)), torch.randint(0, 10, (8,))
    layout = GroupLayout.chunks(2, 8, torch.device("cpu"))

    def loss(module: nn.Module) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(x, t, y)
        return out.float().pow(2).mean(dim=(1, 2, 3))

    reference = _reference(model, loss, layout.sample_group, 2, seed=0)
    for dtype in (torch.float32, torch.bfloat16):
        grads = _grouped(model, loss, layout, seed=0, dtype=dtype)
        error = (grads.float() - reference).abs().max() / reference.abs().max()
        assert error < 2e-2, dtype


def test_grouped_vmap_and_backward_give_the_same_pcgrad_updates(tmp_path: Path) -> None:
    steps = [
        _step(make_recipe(tmp_path, "method.name=pcgrad", f"train.task_grads={mode}"))
        for mode in ("grouped", "vmap", "backward")
    ]
    for seed in range(2):
        batch = _batch(seed, 16, 4)
        for step in steps:
            step.update(*batch, measure=False)
    assert torch.allclose(_weights(steps[0]), _weights(steps[1]), atol=1e-5)
    assert torch.allclose(_weights(steps[0]), _weights(steps[2]), atol=1e-5)


def test_conflict_monitor_reports_the_cosines_of_the_cluster_gradients(tmp_path: Path) -> None:
    """Vanilla (uniform sampling, unequal clusters) with train.conflict_every=1: the reported
    matrix is the cosine matrix of k backward passes, and the update is still vanilla's."""
    plain = _step(make_recipe(tmp_path))
    watched = _step(make_recipe(tmp_path, "train.conflict_every=1"))
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(16, 1, 8, 8, generator=gen) * 2 - 1
    y = torch.randint(0, 10, (16,), generator=gen)
    t = torch.randint(0, 100, (16,), generator=gen)
    cluster = torch.bucketize(t, plain.clusters.ends)
    noise = torch.randn(x0.shape, generator=gen)
    module = watched.model
    params = [p for _, p in trainable(module)]
    x_t = watched.diffusion.q_sample(x0, t, noise)
    per = watched.per_sample_loss(module(x_t, t, y), x0, x_t, t, noise)
    rows = task_grads_backward(params, torch.zeros(4).index_add(0, cluster, per))
    expected = gradient_cosines(rows.double() @ rows.double().T)

    plain.update(x0, y, t, cluster, noise, measure=False)
    out = watched.update(x0, y, t, cluster, noise, measure=False)
    assert out.conflict is not None
    assert torch.allclose(out.conflict, expected, atol=1e-5)
    assert torch.allclose(out.conflict.diagonal(), torch.ones(4), atol=1e-6)
    assert torch.allclose(_weights(plain), _weights(watched), atol=1e-6)
    assert plain.update(x0, y, t, cluster, noise, measure=True).conflict is None


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_grouped_gradients_agree_with_fp32(tmp_path: Path, precision: str) -> None:
    """Under autocast (and fp16's GradScaler, whose scale the Gram matrix must divide out),
    Nash-MTL's bargaining weights, which scale like 1 / |g|, agree with fp32's."""
    low = ["train.task_grads_dtype=bf16"] if precision == "bf16" else []
    steps = [
        _step(make_recipe(tmp_path, "method.name=nashmtl", "method.update_every=1", *extra))
        for extra in ([], [f"train.precision={precision}", *low])
    ]
    batch = _batch(0, 16, 4)
    for step in steps:
        step.update(*batch, measure=False)
    reference, mixed = (step.method.alpha for step in steps)
    assert not torch.equal(reference, torch.ones(4))
    assert torch.allclose(mixed, reference, rtol=3e-2), (mixed, reference)
