"""Recipes: inheritance, overrides, validation and every error path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from ant.cli import cli
from ant.core.checkpoint import load_checkpoint
from ant.core.errors import AntError
from ant.core.runtime import Runtime
from ant.data.writer import write_array_shards
from ant.recipe import (
    Recipe,
    dump_recipe,
    list_recipes,
    load_recipe,
    write_resolved_recipe,
)
from ant.recipe.build import build_diffusion, build_method, build_model, plan_run
from ant.recipe.yaml_io import parse_value
from ant.training.loop import fit

from .helpers import REPO, assert_one_line_error, run_ant

CPU = Runtime()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    write(
        tmp_path / "bases" / "root.yaml",
        "description: the root\noptim: {lr: 2e-4, weight_decay: 0.01}\ntrain: {steps: 10}\n",
    )
    write(tmp_path / "bases" / "mid.yaml", "base: root.yaml\ntrain: {steps: 20, seed: 3}\n")
    return write(
        tmp_path / "child.yaml",
        "base: bases/mid.yaml\nmethod: {name: uw}\ntrain: {seed: 7}\n",
    )


def test_inheritance_merges_sections_key_by_key(chain: Path) -> None:
    recipe = load_recipe(str(chain))
    assert recipe.optim.lr == pytest.approx(2e-4)
    assert isinstance(recipe.optim.lr, float)
    assert recipe.optim.weight_decay == pytest.approx(0.01)
    assert recipe.train.steps == 20
    assert recipe.train.seed == 7
    assert recipe.method.name == "uw"
    assert recipe.description == "the root"
    assert recipe.name == "child"
    assert recipe.model.name == "DiT-S/2"


def test_overrides_parse_yaml_values(chain: Path) -> None:
    recipe = load_recipe(
        str(chain),
        ["optim.lr=1e-4", "train.steps=5", "optim.betas=[0.8, 0.95]", "data.shards=pipe:cat x.tar"],
    )
    assert recipe.optim.lr == 1e-4 and isinstance(recipe.optim.lr, float)
    assert recipe.train.steps == 5
    assert recipe.optim.betas == (0.8, 0.95)
    assert recipe.data.shards == "pipe:cat x.tar"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-4", 1e-4), ("1E5", 1e5), ("-2.5e-3", -2.5e-3), ("3", 3), ("true", True), ("abc", "abc")],
)
def test_override_values_follow_yaml_1_2_numbers(text: str, expected: object) -> None:
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_method_options_are_checked_and_coerced(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", "method: {name: uw, lr: 5e-2}\n")
    recipe = load_recipe(str(path))
    assert recipe.method.model_extra == {"lr": 0.05}


def test_resolved_recipe_round_trips(chain: Path, tmp_path: Path) -> None:
    recipe = load_recipe(str(chain), ["optim.lr=3e-4"])
    written = write_resolved_recipe(recipe, tmp_path / "run")
    assert written == tmp_path / "run" / "recipe.yaml"
    assert load_recipe(str(written)) == recipe.model_copy(update={"name": recipe.name})
    assert yaml.safe_load(dump_recipe(recipe))["optim"]["lr"] == pytest.approx(3e-4)
    assert not list((tmp_path / "run").glob(".recipe-*"))


BAD_RECIPES = [
    ("optim: {lrr: 0.1}\n", [], ["optim.lrr", "unknown key", "did you mean 'lr'"]),
    ("optimm: {lr: 0.1}\n", [], ["optimm", "unknown key", "did you mean 'optim'"]),
    ("train: {steps: many}\n", [], ["train.steps", "valid integer", "'many'"]),
    ("optim: {lr: -1.0}\n", [], ["optim.lr", "greater than 0"]),
    ("diffusion: {schedule: cosinus}\n", [], ["diffusion.schedule", "'linear' or 'cosine'"]),
    ("train: 5\n", [], ["train", "valid dictionary"]),
    ("- a\n- b\n", [], ["must be a mapping"]),
    ("train: {steps: [1\n", [], ["invalid YAML", "line"]),
    ("train: {steps: 1, steps: 2}\n", [], ["duplicate key 'steps'"]),
    ("base: missing.yaml\n", [], ["recipe file not found", "missing.yaml"]),
    ("base: 3\n", [], ["base", "relative path"]),
    ("{}\n", ["optim.lr"], ["expected KEY=VALUE"]),
    ("optim: {lr: 0.1}\n", ["optim.lr.x=1"], ["optim.lr is a value"]),
    ("{}\n", ["optim.lr.x=1"], ["command line: optim.lr: input should be a valid number"]),
    ("{}\n", ["optim.lr=fast"], ["command line", "optim.lr", "valid number"]),
    ("{}\n", ["train..steps=1"], ["empty component"]),
    ("model: {name: DiT-S/3}\n", [], ["model.name", "unknown model 'DiT-S/3'", "did you mean"]),
    ("method: {name: UW}\n", [], ["method.name", "unknown method 'UW'", "did you mean 'uw'"]),
    ("method: {name: uw, lrr: 0.1}\n", [], ["method.lrr", "unknown option", "did you mean 'lr'"]),
    ("method: {name: uw, lr: fast}\n", [], ["method.lr", "valid number"]),
    ("clustering: {objective: unifrom}\n", [], ["clustering.objective", "did you mean 'uniform'"]),
]


@pytest.mark.parametrize(("text", "overrides", "fragments"), BAD_RECIPES)
def test_bad_recipes_give_one_line(
    tmp_path: Path, text: str, overrides: list[str], fragments: list[str]
) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(AntError) as info:
        load_recipe(str(path), overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_error_names_the_file_that_set_the_key(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "train: {stepz: 3}\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\noptim: {lr: 0.1}\n")
    with pytest.raises(AntError, match=r"base\.yaml: train\.stepz: unknown key"):
        load_recipe(str(child))


def test_base_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(AntError, match="loops back"):
        load_recipe(str(tmp_path / "a.yaml"))


def test_cli_show_prints_float(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", "optim: {lr: 0.5}\n")
    result = CliRunner().invoke(cli, ["recipe", "show", str(path), "optim.lr=1e-4"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["optim"]["lr"] == 1e-4 and isinstance(shown["optim"]["lr"], float)
    assert set(shown) >= {"model", "diffusion", "data", "clustering", "method", "optim"}
    assert set(shown) >= {"train", "sample", "eval"}


def test_cli_misspelt_key_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", "train: {ckpt_evry: 5}\n")
    result = run_ant("recipe", "validate", str(path))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "train.ckpt_evry", "did you mean 'ckpt_every'")
    assert result.stdout == ""


def test_cli_missing_recipe_exits_2() -> None:
    result = run_ant("recipe", "show", "no/such/recipe.yaml")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "recipe file not found", "ant recipes")


RECIPES_DIR = REPO / "recipes"
SHIPPED = sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))
TABLE_1 = ["adm_ffhq", "adm_celebahq", "ldm_ffhq", "ldm_celebahq"]
"""The recipes of the paper's Table 1 (docs/recipes.md)."""


def test_the_paper_recipes_are_shipped() -> None:
    assert set(SHIPPED) >= {*TABLE_1, "dit_l2_imagenet", "digits_dit", "digits_adm"}
    assert "faces256" not in dict(list_recipes()), "shared bases are not listed as recipes"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_validate(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.description, "every shipped recipe has a one-line description"


def test_cli_validates_a_table_1_recipe_with_overrides() -> None:
    path = "recipes/ldm_celebahq.yaml"  # two levels of bases, one in recipes/bases/
    result = run_ant("recipe", "validate", path, "method.name=pcgrad", "clustering.objective=snr")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{path}: valid (model ADM, method pcgrad)"


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["sample.steps=1"], ["sample.steps", "greater than or equal to 2"]),
        (["model.num_classes=0", "sample.cfg_scale=3"], ["sample.cfg_scale", "num_classes is 0"]),
        (["model.class_dropout=0", "sample.cfg_scale=3"], ["class_dropout is 0", "no null label"]),
    ],
)
def test_validate_refuses_sample_settings_training_would_die_on(
    overrides: list[str], fragments: list[str]
) -> None:
    result = run_ant("recipe", "validate", "recipes/digits_dit.yaml", *overrides)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, *fragments)


@pytest.mark.parametrize("path", sorted((RECIPES_DIR / "bases").glob("*.yaml")), ids=str)
def test_shared_bases_validate(path: Path) -> None:
    load_recipe(str(path))


def _check_buildable(recipe: Recipe) -> None:
    """What `ant train` checks before building the network: clusters, method, batch split."""
    plan = plan_run(recipe, None)
    assert len(plan.clustering.intervals) == recipe.clustering.k


@pytest.mark.parametrize("objective", ["timestep", "snr"])
@pytest.mark.parametrize("method", ["uw", "pcgrad", "nashmtl"])
@pytest.mark.parametrize("name", [*TABLE_1, "dit_l2_imagenet"])
def test_paper_recipes_take_every_method_and_objective(
    name: str, method: str, objective: str
) -> None:
    recipe = load_recipe(name, [f"method.name={method}", f"clustering.objective={objective}"])
    assert (recipe.method.name, recipe.clustering.objective) == (method, objective)
    _check_buildable(recipe)


@pytest.mark.parametrize("name", [*TABLE_1, "dit_l2_imagenet"])
def test_paper_recipes_take_the_gradient_objective(name: str, tmp_path: Path) -> None:
    gap = np.abs(np.subtract.outer(np.arange(10), np.arange(10)))
    np.save(tmp_path / "affinity.npy", np.exp(-gap / 3.0))  # 10 groups of 100 timesteps
    for method in ("uw", "pcgrad", "nashmtl"):
        recipe = load_recipe(
            name,
            [
                f"method.name={method}",
                "clustering.objective=gradient",
                f"clustering.affinity={tmp_path / 'affinity.npy'}",
            ],
        )
        _check_buildable(recipe)


def test_table_1_recipes_hold_their_settings() -> None:
    adm = load_recipe("adm_ffhq")
    assert (adm.model.name, adm.model.input_size, adm.model.in_channels) == ("ADM-FFHQ256", 256, 3)
    assert adm.model.num_classes == 0 and adm.vae.name_or_path is None
    assert (adm.diffusion.schedule, adm.diffusion.learn_sigma) == ("linear", True)
    assert adm.optim.lr == 2e-5 and adm.train.global_batch_size % adm.clustering.k == 0
    ldm = load_recipe("ldm_ffhq")
    assert (ldm.model.input_size, ldm.model.in_channels) == (32, 4)
    assert not ldm.diffusion.learn_sigma
    assert ldm.vae.name_or_path == "stabilityai/sd-vae-ft-ema" and not ldm.sample.clip_x0
    assert ldm.optim.lr == pytest.approx(2e-6 * ldm.train.global_batch_size)
    celeba = load_recipe("ldm_celebahq")
    assert celeba.optim.lr == pytest.approx(2e-6 * celeba.train.global_batch_size)
    assert celeba.model == ldm.model
    for name in TABLE_1:
        recipe = load_recipe(name)
        assert (recipe.method.name, recipe.clustering.objective, recipe.clustering.k) == (
            "uw",
            "timestep",
            5,
        )
        assert recipe.eval.num_samples == 50_000 and "fid" in recipe.eval.metrics
    # switching the network drops the previous one's options (the smoke tests rely on it)
    assert load_recipe("ldm_ffhq", ["model.name=ADM-Micro"]).model.model_extra == {}


@pytest.mark.parametrize(
    ("name", "params"),
    [("adm_ffhq", 93_563_910), ("ldm_ffhq", 274_060_196), ("ldm_celebahq", 274_060_196)],
)
def test_table_1_networks_build_at_full_size(name: str, params: int) -> None:
    recipe = load_recipe(name)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(recipe)
    assert sum(p.numel() for p in model.parameters()) == params


def _random_shards(path: Path, channels: int, size: int) -> Path:
    generator = torch.Generator().manual_seed(0)
    arrays = [torch.randn(channels, size, size, generator=generator).numpy() for _ in range(20)]
    write_array_shards(arrays, None, path, 10)
    return path


SMOKE = [
    "data.num_workers=0",
    "train.steps=1",
    "train.global_batch_size=10",
    "train.precision=fp32",
    "sample.num=2",
    "sample.steps=2",
]


def test_adm_ffhq_trains_a_step_with_a_tiny_network(tmp_path: Path) -> None:
    shards = _random_shards(tmp_path / "pixels", 3, 16)
    recipe = load_recipe(
        "adm_ffhq",
        [
            "model.name=ADM-Micro",
            "model.input_size=16",
            f"data.shards={shards}",
            *SMOKE,
        ],
    )
    assert recipe.model.num_classes == 0 and recipe.diffusion.learn_sigma
    fit(recipe, tmp_path / "run", CPU, show=False)
    assert load_checkpoint(tmp_path / "run")["step"] == 1


def test_ldm_ffhq_unet_trains_a_step_at_a_tiny_width(tmp_path: Path) -> None:
    shards = _random_shards(tmp_path / "latents", 4, 8)
    recipe = load_recipe(
        "ldm_ffhq",
        [
            "model.model_channels=32",  # LDM's U-Net options otherwise, on 8x8x4 "latents"
            "model.input_size=8",
            "vae.name_or_path=null",  # the VAE is not in this machine's cache
            f"data.shards={shards}",
            *SMOKE,
        ],
    )
    fit(recipe, tmp_path / "run", CPU, show=False)
    assert load_checkpoint(tmp_path / "run")["step"] == 1


def test_headline_recipe_matches_the_paper_settings() -> None:
    recipe = load_recipe("dit_l2_imagenet")
    assert (recipe.model.name, recipe.model.input_size, recipe.model.in_channels) == (
        "DiT-L/2",
        32,
        4,
    )
    assert recipe.train.global_batch_size == 240 and recipe.train.steps == 400_000
    assert recipe.optim.lr == 1e-4 and recipe.optim.weight_decay == 0.0
    assert recipe.train.ema_decay == 0.9999 and recipe.train.ckpt_every == 10_000
    assert recipe.diffusion.schedule == "cosine" and recipe.diffusion.learn_sigma
    assert recipe.model.class_dropout == 0.1
    assert (recipe.clustering.k, recipe.method.name) == (5, "uw")
    (group,) = build_method(recipe, recipe.clustering.k, build_diffusion(recipe))[0].param_groups()
    assert group["lr"] == 0.025 and group["weight_decay"] == 0.0
    assert (recipe.sample.steps, recipe.sample.cfg_scale) == (250, 1.5)
    assert (recipe.vae.name_or_path, recipe.vae.encode) == ("stabilityai/sd-vae-ft-ema", "offline")
    assert not recipe.sample.clip_x0
    for size in ("s2", "b2", "xl2"):  # the other sizes inherit the data path and the VAE
        assert load_recipe(f"dit_{size}_imagenet").vae == recipe.vae
    assert load_recipe("dit_xl2_imagenet").model.name == "DiT-XL/2"


def test_switching_a_component_drops_the_previous_components_options(tmp_path: Path) -> None:
    base = tmp_path / "uw.yaml"
    base.write_text(
        f"base: {Path(__file__).parents[1] / 'recipes' / 'digits_dit.yaml'}\n"
        "method: {name: uw, lr: 0.01}\n"
    )
    child = tmp_path / "nash.yaml"
    child.write_text(f"base: {base}\nmethod: {{name: nashmtl, update_every: 5}}\n")
    assert load_recipe(str(child)).method.model_extra == {"update_every": 5}
    assert load_recipe(str(base), ["method.name=pcgrad"]).method.model_extra == {}
    assert load_recipe(str(base), ["method.name=uw"]).method.model_extra == {"lr": 0.01}
    with pytest.raises(AntError, match=r"method\.lr: unknown option of method 'pcgrad'"):
        load_recipe(str(base), ["method.lr=0.5", "method.name=pcgrad"])
