"""The plugin system: built-ins through hooks, duplicates, unknown names, real entry points."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import click
import pytest
import torch

import ant
from ant.core.errors import AntError
from ant.core.plugins import add_commands, build_plugin_manager, collect, registry

from .helpers import assert_one_line_error, run_ant

NO_AUTOLOAD = {"ANT_DISABLE_PLUGIN_AUTOLOAD": "1"}


def test_builtins_register_through_the_hooks() -> None:
    methods = registry("method")
    assert {"vanilla", "uw"} <= set(methods.names())
    entry = methods.get("uw")
    assert entry.distribution == "ant-diffusion"
    assert entry.plugin == "ant.methods.plugin"
    assert entry.description.startswith("Uncertainty Weighting")
    assert "uniform" in registry("objective")
    assert "DiT-L/2" in registry("model")


class _Duplicate:
    @ant.hookimpl
    def ant_register_methods(self, register: Any) -> None:
        register("uw", object)


def test_two_plugins_registering_one_name_is_an_error_naming_both() -> None:
    manager = build_plugin_manager(autoload=False, extra=[(_Duplicate(), "dup", "ant-dup")])
    with pytest.raises(AntError) as info:
        collect(manager, "method")
    message = str(info.value)
    assert "'uw' is registered twice" in message
    assert "ant-diffusion" in message and "ant-dup" in message


class _Lazy:
    calls: ClassVar[list[dict[str, Any]]] = []

    @staticmethod
    def factory(size: int = 3) -> list[int]:
        """A lazily built component."""
        _Lazy.calls.append({"size": size})
        return [0] * size

    @ant.hookimpl
    def ant_register_metrics(self, register: Any) -> None:
        register("lazy", _Lazy.factory)

    @ant.hookimpl
    def ant_register_commands(self, cli: click.Group) -> None:
        @cli.command("hello")
        def hello() -> None:
            """Say hello."""
            click.echo("hello")


def test_registries_build_lazily_and_plugins_add_commands() -> None:
    manager = build_plugin_manager(autoload=False, extra=[(_Lazy(), "lazy", "ant-lazy")])
    metrics = collect(manager, "metric")
    assert _Lazy.calls == []
    entry = metrics.get("lazy")
    assert entry.description == "A lazily built component."
    assert entry.build(size=2) == [0, 0]
    assert _Lazy.calls == [{"size": 2}]
    group = click.Group("root")
    providers = add_commands(manager, group)
    assert providers["hello"] == "ant-lazy"
    assert providers["plugins"] == "ant-diffusion"


def test_unknown_name_lists_available_and_closest() -> None:
    with pytest.raises(AntError) as info:
        registry("method").get("vanila")
    message = str(info.value)
    assert "unknown method 'vanila'" in message
    assert "did you mean 'vanilla'" in message
    assert "uw" in message and "vanilla" in message


def test_unknown_kind() -> None:
    with pytest.raises(AntError, match="unknown plugin kind"):
        registry("optimizer")


def test_third_party_plugin_is_listed_via_entry_points() -> None:
    result = run_ant("plugins", "--kind", "method", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["gls"]["distribution"] == "ant-gls"
    assert rows["gls"]["kind"] == "method"
    assert rows["gls"]["description"].startswith("Geometric mean")
    assert rows["uw"]["distribution"] == "ant-diffusion"


def test_autoload_can_be_disabled() -> None:
    result = run_ant("plugins", "--kind", "method", "--json", env=NO_AUTOLOAD)
    assert result.returncode == 0, result.stderr
    assert "gls" not in {row["name"] for row in json.loads(result.stdout)}


def test_plugins_table_shows_every_kind() -> None:
    result = run_ant("plugins")
    assert result.returncode == 0, result.stderr
    for fragment in ("model", "objective", "method", "data_source", "command", "ant-gls"):
        assert fragment in result.stdout


def test_recipe_selects_the_third_party_method(tmp_path: Path) -> None:
    recipe = tmp_path / "gls.yaml"
    recipe.write_text("method: {name: gls, floor: 1e-8}\nclustering: {k: 5}\n")
    ok = run_ant("recipe", "show", str(recipe))
    assert ok.returncode == 0, ok.stderr
    assert "name: gls" in ok.stdout and "floor: 1.0e-08" in ok.stdout
    missing = run_ant("recipe", "validate", str(recipe), env=NO_AUTOLOAD)
    assert missing.returncode == 2
    assert_one_line_error(missing.stderr, "method.name", "unknown method 'gls'", "available:")


def test_third_party_method_computes_the_geometric_mean() -> None:
    method = registry("method").build("gls", num_tasks=3)
    losses = torch.tensor([1.0, 4.0, 16.0], requires_grad=True)
    total = method(losses)
    assert total.item() == pytest.approx(4.0)
    total.backward()
    expected = 4.0 / (3 * losses.detach())
    assert torch.allclose(losses.grad, expected)
    assert torch.allclose(method.task_weights(), expected)


def test_weightings_and_extractors_are_kinds_of_their_own() -> None:
    assert set(registry("weighting").names()) == {"minsnr", "p2", "debias", "edm2_uncertainty"}
    assert not {"minsnr", "p2"} & set(registry("method").names())
    assert {"inception", "vgg16", "classifier"} == set(registry("extractor").names())
    assert "inception" not in registry("metric")


def test_plugins_lists_the_weighting_kind_and_a_misplaced_name_gets_a_pointer() -> None:
    result = run_ant("plugins", "--kind", "weighting", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert sorted(row["name"] for row in rows) == ["debias", "edm2_uncertainty", "minsnr", "p2"]
    assert {row["kind"] for row in rows} == {"weighting"}
    refused = run_ant("recipe", "validate", "recipes/digits_dit.yaml", "method.name=minsnr")
    assert refused.returncode == 2
    assert_one_line_error(refused.stderr, "'minsnr' is a weighting", "weighting.name=minsnr")
