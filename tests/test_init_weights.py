"""model.init_from: state dicts in the published DiT and ADM layouts (built here from the
independent re-implementations of tests/reference_layouts.py, no download) and ant runs load
into ant's models with equal outputs; mismatches are refused in one line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from ant.core import checkpoint as ckpt
from ant.core.errors import AntError
from ant.core.plugins import registry
from ant.models.adm import ADMUNet
from ant.models.dit import DiT
from ant.models.weights import convert_adm, legacy_qkv_to_ant, load_init_weights, match
from ant.training.loop import fit

from .helpers import assert_one_line_error, run_ant
from .reference_layouts import RefDiT, RefUNet, dit_pos_embed
from .test_training import CPU_CTX, make_recipe


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


def tiny_dit(**options: object) -> DiT:
    settings: dict[str, object] = dict(
        input_size=8,
        patch_size=2,
        in_channels=4,
        hidden_size=64,
        depth=2,
        num_heads=4,
        num_classes=10,
        class_dropout=0.1,
        learn_sigma=True,
    )
    return DiT(**(settings | options)).eval()  # type: ignore[arg-type]


def dit_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 8, 8, generator=generator)
    return x, torch.tensor([0, 417, 999]), torch.tensor([3, 10, 7])


def test_legacy_qkv_order_is_head_major() -> None:
    heads, width = 2, 3
    legacy = torch.arange(3 * heads * width)  # channel h*3d + j*d + c holds that number
    ant = legacy_qkv_to_ant(legacy, heads)
    for j in range(3):
        for h in range(heads):
            for c in range(width):
                assert ant[j * heads * width + h * width + c] == h * 3 * width + j * width + c


def test_a_dit_layout_state_dict_loads_with_equal_outputs(tmp_path: Path) -> None:
    reference = randomize(RefDiT(8, 2, 4, 64, depth=2, heads=4, classes=10))
    path = tmp_path / "DiT-tiny.pt"
    torch.save(reference.state_dict(), path)
    model = tiny_dit()
    table = torch.from_numpy(dit_pos_embed(64, 4)).float()
    torch.testing.assert_close(model.pos_embed[0], table, atol=1e-6, rtol=0)
    ema = copy.deepcopy(model)
    summary = load_init_weights(str(path), model, ema)
    assert "dit layout" in summary and "not loaded" not in summary
    x, t, y = dit_inputs()
    with torch.no_grad():
        expected = reference(x, t, y)
        torch.testing.assert_close(model(x, t, y), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ema(x, t, y), expected, atol=1e-5, rtol=1e-5)


def test_a_dit_training_checkpoint_gives_model_and_ema(tmp_path: Path) -> None:
    online, averaged = (
        randomize(RefDiT(8, 2, 4, 64, 2, 4, 10), 0),
        randomize(RefDiT(8, 2, 4, 64, 2, 4, 10), 1),
    )
    path = tmp_path / "0400000.pt"
    torch.save(
        {"model": online.state_dict(), "ema": averaged.state_dict(), "opt": {}, "args": {}}, path
    )
    model = tiny_dit()
    ema = copy.deepcopy(model)
    load_init_weights(str(path), model, ema, fmt="dit")
    x, t, y = dit_inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), online(x, t, y), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ema(x, t, y), averaged(x, t, y), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("input_size", [32, 64])
def test_released_dit_xl2_keys_and_shapes_match(input_size: int) -> None:
    """DiT-XL/2 at 256 px (32x32 latents) and 512 px (64x64), as released."""
    with torch.device("meta"):
        reference = RefDiT(input_size, 2, 4, 1152, depth=28, heads=16, classes=1000)
        model = registry("model").build(
            "DiT-XL/2",
            input_size=input_size,
            in_channels=4,
            num_classes=1000,
            class_dropout=0.1,
            learn_sigma=True,
        )
    fit_ = match(reference.state_dict(), model)
    assert fit_.exact, fit_.problems()
    assert reference.state_dict()["pos_embed"].shape == (1, (input_size // 2) ** 2, 1152)
    assert reference.state_dict()["y_embedder.embedding_table.weight"].shape == (1001, 1152)


def tiny_adm(updown: bool = True, class_dropout: float = 0.0) -> ADMUNet:
    return ADMUNet(
        input_size=8,
        in_channels=3,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4,),
        num_head_channels=16,
        resblock_updown=updown,
        class_dropout=class_dropout,
        num_classes=10,
        learn_sigma=True,
    ).eval()


def adm_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return (
        torch.randn(2, 3, 8, 8, generator=generator),
        torch.tensor([5, 900]),
        torch.tensor([1, 8]),
    )


@pytest.mark.parametrize(("updown", "new_order"), [(True, False), (False, False), (True, True)])
def test_an_adm_layout_state_dict_loads_with_equal_outputs(
    tmp_path: Path, updown: bool, new_order: bool
) -> None:
    reference = RefUNet(3, 32, (1, 2), 1, (2,), 16, classes=10, updown=updown, new_order=new_order)
    randomize(reference)
    path = tmp_path / "adm.pt"
    torch.save(reference.state_dict(), path)
    model = tiny_adm(updown)
    fmt = "adm-new-attention" if new_order else "auto"
    summary = load_init_weights(str(path), model, copy.deepcopy(model), fmt=fmt)
    assert "adm" in summary and "not loaded" not in summary
    x, t, y = adm_inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), reference(x, t, y), atol=1e-5, rtol=1e-5)
        if not new_order:
            # The QKV reorder matters: read as the new attention order, the outputs differ.
            other = tiny_adm(updown)
            load_init_weights(str(path), other, copy.deepcopy(other), fmt="adm-new-attention")
            assert not torch.allclose(other(x, t, y), reference(x, t, y), atol=1e-3)


def test_an_adm_checkpoint_without_a_null_class_starts_a_guided_model(tmp_path: Path) -> None:
    reference = randomize(RefUNet(3, 32, (1, 2), 1, (2,), 16, classes=10))
    path = tmp_path / "adm.pt"
    torch.save(reference.state_dict(), path)
    model = tiny_adm(class_dropout=0.1)
    null_row = model.label_embed.embedding_table.weight[10].clone()  # type: ignore[union-attr]
    summary = load_init_weights(str(path), model, copy.deepcopy(model))
    assert "null-class row" in summary
    table = model.label_embed.embedding_table.weight  # type: ignore[union-attr]
    assert torch.equal(table[:10], reference.label_emb.weight)  # type: ignore[union-attr]
    assert torch.equal(table[10], null_row)
    x, t, y = adm_inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), reference(x, t, y), atol=1e-5, rtol=1e-5)


def test_released_adm_imagenet64_keys_and_shapes_match() -> None:
    """guided-diffusion's 64x64 class-conditional model (attention at 32, 16, 8 px)."""
    with torch.device("meta"):
        reference = RefUNet(3, 192, (1, 2, 3, 4), 3, (2, 4, 8), 64, classes=1000)
        model = registry("model").build(
            "ADM-ImageNet64",
            input_size=64,
            in_channels=3,
            num_classes=1000,
            class_dropout=0.0,
            learn_sigma=True,
        )
    fit_ = match(convert_adm(reference.state_dict(), model), model)
    assert fit_.exact, fit_.problems()
    assert sum(p.numel() for p in reference.parameters()) == 295_904_454


def test_mismatches_are_refused_or_listed(tmp_path: Path) -> None:
    path = tmp_path / "dit.pt"
    torch.save(randomize(RefDiT(8, 2, 4, 64, 2, 4, 10)).state_dict(), path)
    fewer = tiny_dit(num_classes=5)
    with pytest.raises(
        AntError,
        match=r"y_embedder.embedding_table.weight \(11, 64\) vs .*\(6, 64\).*init_strict=false",
    ):
        load_init_weights(str(path), fewer, copy.deepcopy(fewer))
    no_sigma = tiny_dit(learn_sigma=False)
    before = no_sigma.final_layer.linear.weight.clone()
    summary = load_init_weights(str(path), no_sigma, copy.deepcopy(no_sigma), strict=False)
    assert "not loaded: shapes differ for final_layer.linear.weight" in summary
    assert torch.equal(no_sigma.final_layer.linear.weight, before)
    reference_qkv = torch.load(path, weights_only=True)["blocks.0.attn.qkv.weight"]
    assert torch.equal(no_sigma.blocks[0].attn.qkv.weight, reference_qkv)
    with pytest.raises(AntError, match="not found"):
        load_init_weights(str(tmp_path / "none.pt"), fewer, fewer)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "odd.pt")
    with pytest.raises(AntError, match="not an ant, DiT or ADM checkpoint"):
        load_init_weights(str(tmp_path / "odd.pt"), fewer, fewer)


def test_fine_tuning_starts_from_a_run_and_resume_does_not_reload(
    tmp_path: Path, digits_shards: Path
) -> None:
    source = tmp_path / "source"
    fit(make_recipe(tmp_path, digits_shards, "train.steps=3"), source, CPU_CTX, show=False)
    start = ckpt.load_checkpoint(source)
    tuned = tmp_path / "tuned"
    recipe = make_recipe(
        tmp_path,
        digits_shards,
        "train.steps=1",
        "optim.lr=1e-12",
        "train.ema_decay=1.0",
        f"model.init_from={source}",
    )
    fit(recipe, tuned, CPU_CTX, show=False)
    after = ckpt.load_checkpoint(tuned)
    for key, value in start["model"].items():
        torch.testing.assert_close(after["model"][key], value, atol=1e-9, rtol=0)
    for key, value in start["ema"].items():
        assert torch.equal(after["ema"][key], value), key
    assert int(after["optimizer"]["state"][0]["step"]) == 1, "the optimizer starts fresh"
    gone = make_recipe(
        tmp_path,
        digits_shards,
        "train.steps=2",
        "optim.lr=1e-12",
        "train.ema_decay=1.0",
        f"model.init_from={tmp_path / 'deleted'}",
    )
    fit(gone, tuned, CPU_CTX, resume=True, show=False)
    assert ckpt.load_checkpoint(tuned)["step"] == 2


def test_a_missing_init_file_is_one_line(tmp_path: Path, digits_shards: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(make_recipe(tmp_path, digits_shards).model_dump_json())
    result = run_ant(
        "train",
        str(recipe),
        f"model.init_from={tmp_path / 'none.pt'}",
        "--run-dir",
        str(tmp_path / "run"),
        "--no-progress",
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "model.init_from", "none.pt")
