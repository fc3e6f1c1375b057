"""Recipes: inheritance, overrides, validation and every error path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ant.cli import cli
from ant.errors import AntError
from ant.recipes import dump_recipe, load_recipe, write_resolved_recipe
from ant.recipes.yaml_io import parse_value
from ant.training.build import build_diffusion, build_method

from .helpers import assert_one_line_error, run_ant


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


@pytest.mark.parametrize("name", ["digits_dit", "digits_dit_vanilla", "dit_s2_imagenet"])
def test_shipped_recipes_validate(name: str) -> None:
    assert load_recipe(name).name == name


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
