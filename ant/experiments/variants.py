"""Variants of a reproduction sweep: named presets, ``METHOD-OBJECTIVE`` names and YAML files.

A variant is a name and a list of recipe overrides (``KEY=VALUE``) applied on top of the base
recipe. ``--variants`` takes a YAML file or a comma-separated list of names, each a preset
(``paper-digits``), a catalogued variant (``minsnr``) or ``METHOD-OBJECTIVE`` (``cagrad-snr``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ant.core.errors import AntError
from ant.recipe.yaml_io import parse_value, parse_yaml

K = 5
"""Clusters of every preset variant (the paper's default)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class Variant:
    """One arm of the comparison: ``overrides`` on top of the base recipe."""

    name: str
    overrides: tuple[str, ...]


def method_objective(method: str, objective: str) -> tuple[str, ...]:
    """The overrides of ``method`` across ``K`` clusters of the ``objective`` clustering."""
    return (
        f"method.name={method}",
        "weighting.name=none",
        f"clustering.objective={objective}",
        f"clustering.k={K}",
    )


DTR = ("model.routing.ratio=0.8", "model.routing.alpha=4.0")
"""Denoising Task Routing as released (Park et al. 2024): 80% of the channels, alpha 4."""

MINSNR = (
    "method.name=vanilla",
    "weighting.name=minsnr",
    "weighting.gamma=5.0",
    "clustering.objective=timestep",
    f"clustering.k={K}",
)
"""Min-SNR-5 weighting (Hang et al. 2023) inside plain vanilla training: the paper's baseline."""

CATALOGUE: dict[str, tuple[str, ...]] = {
    # Vanilla draws timesteps uniformly and averages the clusters plainly; the clusters only
    # label its per-cluster losses in metrics.jsonl.
    "vanilla": method_objective("vanilla", "timestep"),
    "minsnr": MINSNR,
    # Denoising Task Routing (Park et al. 2024) alone, with Min-SNR, and with ANT-UW.
    "dtr": (*method_objective("vanilla", "timestep"), *DTR),
    "minsnr-dtr": (*MINSNR, *DTR),
    "uw-timestep-dtr": (*method_objective("uw", "timestep"), *DTR),
    "uw-timestep": method_objective("uw", "timestep"),
    # Unequal clusters: stratified sampling (the paper's) reweights the timesteps by
    # T / (k w_i); proportional sampling keeps them uniform (docs/clustering.md).
    "uw-snr": (*method_objective("uw", "snr"), "clustering.sampling=stratified"),
    "uw-gradient": (*method_objective("uw", "gradient"), "clustering.sampling=stratified"),
    "uw-snr-proportional": (*method_objective("uw", "snr"), "clustering.sampling=proportional"),
    "uw-gradient-proportional": (
        *method_objective("uw", "gradient"),
        "clustering.sampling=proportional",
    ),
    "pcgrad-timestep": method_objective("pcgrad", "timestep"),
    "nashmtl-timestep": method_objective("nashmtl", "timestep"),
}
"""Named variants. ``uw-gradient`` and ``uw-gradient-proportional`` need a task-affinity
matrix (``--affinity``)."""

PRESETS: dict[str, tuple[str, ...]] = {
    "paper-digits": (
        "vanilla",
        "minsnr",
        "uw-timestep",
        "uw-snr",
        "uw-gradient",
        "pcgrad-timestep",
        "nashmtl-timestep",
    ),
    # Table 2 of Go et al. (2023): DiT-L/2 on ImageNet-256.
    "paper-imagenet": ("vanilla", "minsnr", "uw-timestep"),
    # Park et al. (2024): DTR alone and combined with Min-SNR and ANT-UW.
    "paper-dtr": ("vanilla", "dtr", "minsnr", "minsnr-dtr", "uw-timestep", "uw-timestep-dtr"),
}
"""Named lists of catalogued variants."""


def format_override(key: str, value: Any) -> str:
    """``KEY=VALUE`` with ``value`` written so that the recipe loader reads it back unchanged.

    >>> format_override("method.name", "uw"), format_override("optim.lr", 1e-4)
    ('method.name=uw', 'optim.lr=0.0001')
    >>> format_override("sample.num", "5")
    'sample.num="5"'
    """
    if isinstance(value, str) and parse_value(value) == value:
        return f"{key}={value}"
    return f"{key}={json.dumps(value)}"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    overrides: list[str] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            overrides.extend(_flatten(value, f"{dotted}."))
        else:
            overrides.append(format_override(dotted, value))
    return overrides


def check_name(name: str, source: str) -> str:
    """``name`` if it can name a run directory, else a one-line error."""
    if not _NAME.match(name):
        raise AntError(
            f"{source}: variant name '{name}' must be letters, digits, '.', '_', '+' or '-' "
            "(it names the run directories)"
        )
    return name


def named_variant(name: str) -> Variant:
    """A catalogued variant, or ``METHOD-OBJECTIVE`` (split at the last '-')."""
    if name in CATALOGUE:
        return Variant(name, CATALOGUE[name])
    method, sep, objective = name.rpartition("-")
    if sep and method and objective:
        from ant.core.plugins import registry

        if method in registry("method").names() and objective in registry("objective").names():
            return Variant(name, method_objective(method, objective))
    from ant.core.registry import closest

    guess = closest(name, [*PRESETS, *CATALOGUE])
    hint = f"did you mean '{guess}'? " if guess else ""
    known = ", ".join([*PRESETS, *CATALOGUE])
    raise AntError(
        f"unknown variant '{name}': {hint}use a preset or variant ({known}), METHOD-OBJECTIVE "
        "(e.g. cagrad-snr; `ant plugins` lists both), or a YAML file of variants"
    )


def load_variant_file(path: Path) -> list[Variant]:
    """Variants from a YAML file.

    ``variants`` maps each name to its overrides: a mapping (dotted or nested keys), a list of
    ``KEY=VALUE`` strings, or nothing for a catalogued name::

        variants:
          vanilla:                     # the catalogued variant
          uw-snr-k8: {method.name: uw, clustering.objective: snr, clustering.k: 8}
          cagrad: ["method.name=cagrad", "method.c=0.5"]
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AntError(f"cannot read variants file {path}: {exc.strerror}") from None
    data = parse_yaml(text, str(path))
    entries = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise AntError(f"{path}: expected a mapping 'variants:' of name -> overrides")
    variants = []
    for raw_name, spec in entries.items():
        name = check_name(str(raw_name), str(path))
        if spec is None:
            variants.append(named_variant(name))
        elif isinstance(spec, Mapping):
            variants.append(Variant(name, tuple(_flatten(spec))))
        elif isinstance(spec, list) and all(isinstance(item, str) for item in spec):
            variants.append(Variant(name, tuple(spec)))
        else:
            raise AntError(
                f"{path}: variants.{name}: expected a mapping of recipe keys, a list of "
                f"KEY=VALUE strings or nothing, got {type(spec).__name__}"
            )
    return variants


def parse_variants(spec: str) -> list[Variant]:
    """``--variants``: a YAML file, or comma-separated presets, variant names and
    ``METHOD-OBJECTIVE`` names; duplicates are kept once, in first-seen order."""
    path = Path(spec)
    if spec.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise AntError(f"variants file not found: {spec}")
        variants = load_variant_file(path)
    else:
        variants = []
        for name in (part.strip() for part in spec.split(",")):
            if not name:
                continue
            names: Sequence[str] = PRESETS.get(name, (name,))
            variants.extend(named_variant(each) for each in names)
    unique: dict[str, Variant] = {}
    for variant in variants:
        if variant.name in unique and unique[variant.name] != variant:
            raise AntError(f"variant '{variant.name}' is defined twice with different overrides")
        unique.setdefault(variant.name, variant)
    if not unique:
        raise AntError("--variants names no variant")
    return list(unique.values())
