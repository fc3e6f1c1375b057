"""Loading recipes: ``base:`` inheritance, ``KEY=VALUE`` overrides, validation, one-line errors."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from ant.core.errors import AntError
from ant.core.registry import closest
from ant.recipe.schema import (
    ClusteringConfig,
    MethodConfig,
    ModelConfig,
    PluginSection,
    Recipe,
    WeightingConfig,
)
from ant.recipe.yaml_io import parse_value, parse_yaml

COMMAND_LINE = "command line"

# Commands that take KEY=VALUE overrides pass anything unrecognised on to them, so that a stray
# argument gets the one-line override error instead of click's usage text.
KeyPath = tuple[str, ...]


@dataclass
class RawRecipe:
    """A merged, not yet validated recipe and where each key came from."""

    data: dict[str, Any]
    sources: dict[KeyPath, str] = field(default_factory=dict)
    path: Path | None = None

    def source_of(self, key: Sequence[str | int]) -> str:
        """The file (or the command line) that set ``key`` or its nearest parent."""
        parts = tuple(str(p) for p in key)
        while parts:
            if parts in self.sources:
                return self.sources[parts]
            parts = parts[:-1]
        return str(self.path) if self.path else COMMAND_LINE


def _record(sources: dict[KeyPath, str], data: Any, source: str, prefix: KeyPath = ()) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            path = (*prefix, str(key))
            sources[path] = source
            _record(sources, value, source, path)


def deep_merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


PLUGIN_SELECTORS: dict[str, tuple[str, type[PluginSection]]] = {
    "model": ("name", ModelConfig),
    "clustering": ("objective", ClusteringConfig),
    "method": ("name", MethodConfig),
    "weighting": ("name", WeightingConfig),
}
"""Sections that select a plugin: the selecting key and the section's schema."""


def _stale_options(section: str, current: Any, new_choice: Any) -> list[str]:
    """Option keys of ``current`` (a plugin section) that belong to a component other than
    ``new_choice``: when a child recipe or an override switches the component, the options of
    the previous one are not inherited."""
    selector, schema = PLUGIN_SELECTORS[section]
    if not isinstance(current, dict) or current.get(selector) in (None, new_choice):
        return []
    return [key for key in current if key not in schema.model_fields]


def _drop_switched_options(base: dict[str, Any], child: dict[str, Any]) -> None:
    for section, (selector, _) in PLUGIN_SELECTORS.items():
        values = child.get(section)
        if isinstance(values, dict) and selector in values:
            for key in _stale_options(section, base.get(section), values[selector]):
                base[section] = {k: v for k, v in base[section].items() if k != key}


def _read_tree(path: Path, chain: tuple[Path, ...]) -> RawRecipe:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise AntError(f"{path}: 'base' inheritance loops back on itself: {cycle}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AntError(f"recipe file not found: {path}") from None
    except OSError as exc:
        raise AntError(f"cannot read recipe {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AntError(f"{path} is not a text file: a recipe is YAML in UTF-8") from None
    data = parse_yaml(text, str(path))
    if data is None:
        raise AntError(
            f"{path} is empty: a recipe sets at least one section (`ant recipe show digits_dit` "
            "prints a full one)"
        )
    if not isinstance(data, dict):
        raise AntError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        merged = RawRecipe(data={}, path=path)
    elif isinstance(base, str) and base:
        merged = _read_tree(path.parent / base, (*chain, resolved))
    else:
        raise AntError(f"{path}: base: expected a relative path to another recipe, got {base!r}")
    _drop_switched_options(merged.data, data)
    merged.data = deep_merge(merged.data, data)
    _record(merged.sources, data, str(path))
    merged.path = path
    return merged


def apply_overrides(raw: RawRecipe, overrides: Iterable[str]) -> None:
    """Apply ``a.b.c=VALUE`` overrides in order; values are parsed as YAML (``1e-4`` -> float)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if item.startswith("-"):
            raise AntError(f"unknown option '{item}'; see --help (overrides are KEY=VALUE)")
        if not sep or not key:
            raise AntError(f"override '{item}': expected KEY=VALUE, e.g. optim.lr=1e-4")
        parts = key.split(".")
        if any(not p for p in parts):
            raise AntError(f"override '{item}': empty component in key '{key}'")
        if parts == ["base"]:
            raise AntError(f"override '{item}': 'base' can only be set inside a recipe file")
        node = raw.data
        for depth, part in enumerate(parts[:-1]):
            raw.sources.setdefault(tuple(parts[: depth + 1]), COMMAND_LINE)
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise AntError(f"override '{item}': {where} is a value, not a section")
            node = child
        value = parse_value(text)
        if len(parts) == 2 and PLUGIN_SELECTORS.get(parts[0], ("",))[0] == parts[1]:
            for stale in _stale_options(parts[0], node, value):
                if raw.sources.get((parts[0], stale)) != COMMAND_LINE:
                    del node[stale]
        node[parts[-1]] = value
        raw.sources[tuple(parts)] = COMMAND_LINE
        _record(raw.sources, value, COMMAND_LINE, tuple(parts))


def _fields_at(loc: Sequence[str | int]) -> list[str]:
    """The valid field names of the schema section at ``loc`` (for suggestions)."""
    model: type[pydantic.BaseModel] = Recipe
    for part in loc:
        info = model.model_fields.get(str(part))
        annotation = info.annotation if info else None
        if not (isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(exc: pydantic.ValidationError, raw: RawRecipe) -> str:
    """One line for the first problem: file, key path and what was expected."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc)
    source = raw.source_of(loc)
    if error["type"] == "extra_forbidden":
        fields = _fields_at(loc[:-1])
        guess = closest(str(loc[-1]), fields)
        hint = f"did you mean '{guess}'?" if guess else f"valid keys: {', '.join(fields)}"
        return f"{source}: {key}: unknown key; {hint}"
    message = error["msg"]
    message = message[:1].lower() + message[1:]
    if error["type"] == "missing":
        return f"{source}: {key}: required key is missing"
    return f"{source}: {key}: {message}, got {_describe(error.get('input'))}"


def build_recipe(raw: RawRecipe) -> Recipe:
    """Validate a merged recipe against the schema; errors become one-line :class:`AntError`."""
    data = dict(raw.data)
    if "name" not in data and raw.path is not None:
        data["name"] = raw.path.stem
    try:
        return Recipe.model_validate(data)
    except pydantic.ValidationError as exc:
        raise AntError(format_validation_error(exc, raw)) from None


def recipe_dirs() -> list[Path]:
    """Where named recipes are looked up: ``./recipes``, the source tree's, the installed ones."""
    here = Path(__file__).resolve().parent
    candidates = [Path.cwd() / "recipes", here.parents[1] / "recipes", here.parent / "_recipes"]
    seen: list[Path] = []
    for candidate in candidates:
        if candidate.is_dir() and candidate.resolve() not in [s.resolve() for s in seen]:
            seen.append(candidate)
    return seen


def find_recipe(spec: str) -> Path:
    """A recipe path: ``spec`` itself if it exists, else a named recipe from :func:`recipe_dirs`."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        raise AntError(f"{spec} is a directory, not a recipe file")
    if os.sep not in spec and "/" not in spec:
        name = spec if spec.endswith((".yaml", ".yml")) else f"{spec}.yaml"
        for directory in recipe_dirs():
            if (directory / name).is_file():
                return directory / name
    raise AntError(f"recipe file not found: {spec}; `ant recipes` lists the available recipes")


def load_raw(spec: str, overrides: Iterable[str] = ()) -> RawRecipe:
    """Read a recipe and its bases and apply ``overrides``, without validating."""
    raw = _read_tree(find_recipe(spec), ())
    apply_overrides(raw, overrides)
    return raw
