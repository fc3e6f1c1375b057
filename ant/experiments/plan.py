"""The plan of a sweep: every (variant, seed) run with its overrides and resolved recipe.

Every run is validated before anything trains, so a typo in a variant fails in a second, not
after hours. The evaluation settings are applied last and may not be overridden per variant:
every run is evaluated alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ant.core.checkpoint import checkpoint_path, list_checkpoints
from ant.core.errors import AntError
from ant.experiments.variants import Variant, format_override
from ant.recipe import Recipe, dump_recipe, load_recipe
from ant.recipe.io import changed_keys
from ant.recipe.loader import find_recipe
from ant.recipe.yaml_io import parse_yaml

RUNS_DIR = "runs"

FLAG_KEYS: dict[str, str] = {
    "train.steps": "--steps",
    "train.seed": "--seeds",
    "train.run_dir": "--out",
    "eval.every": "--eval-every",
    "eval.num_samples": "--eval-samples",
    "eval.metrics": "--metrics",
    "eval.feature_extractor": "--feature-extractor",
    "sample.sampler": "--sampler",
    "sample.steps": "--sampler-steps",
    "sample.cfg_scale": "--cfg-scale",
    "data.shards": "--data",
    "clustering.affinity": "--affinity",
}
"""Recipe keys that have their own option; ``--set`` may not set them."""

SHARED_PREFIXES = ("eval.", "sample.", "data.")
SHARED_KEYS = (
    "eval",
    "sample",
    "data",
    "train",
    "train.steps",
    "train.seed",
    "train.run_dir",
    "train.timestep_range",
)
"""What a variant may not change: the evaluation, the data and the budget are the same for all."""


def override_key(override: str) -> str:
    """The dotted key of ``KEY=VALUE``."""
    return override.partition("=")[0].strip()


@dataclass(frozen=True)
class EvalSettings:
    """How every run is evaluated during training (the EMA model, every ``every`` steps)."""

    every: int
    num_samples: int
    metrics: tuple[str, ...] = ("fd",)
    feature_extractor: str | None = None
    """``None``: ``classifier:`` on the training shards."""
    sampler: str = "ddim"
    sampler_steps: int = 25
    cfg_scale: float | None = None
    """``None``: the recipe's ``sample.cfg_scale``."""

    def overrides(self, shards: str) -> list[str]:
        """The recipe overrides of these settings for training data ``shards``."""
        extractor = self.feature_extractor or f"classifier:{shards}"
        out = [
            f"eval.every={self.every}",
            f"eval.num_samples={self.num_samples}",
            format_override("eval.metrics", list(self.metrics)),
            format_override("eval.feature_extractor", extractor),
            f"sample.sampler={self.sampler}",
            f"sample.steps={self.sampler_steps}",
        ]
        if self.cfg_scale is not None:
            out.append(f"sample.cfg_scale={self.cfg_scale}")
        return out


@dataclass(frozen=True)
class SweepConfig:
    """Everything ``ant reproduce`` was asked for."""

    recipe: str
    variants: Sequence[Variant]
    seeds: Sequence[int]
    steps: int
    evaluation: EvalSettings
    out: Path
    data: str | None = None
    affinity: Path | None = None
    """Kept as given (relative to the working directory, like ``data.shards``), so that an
    archived sweep resumes in another checkout."""
    extra: Sequence[str] = ()
    """``--set`` overrides for every run."""


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the sweep."""

    variant: str
    seed: int
    directory: Path
    recipe_file: str
    overrides: tuple[str, ...]
    recipe: Recipe

    @property
    def name(self) -> str:
        """``<variant>-s<seed>``: the run directory's name."""
        return self.directory.name


@dataclass
class Plan:
    """The runs to train (seed-major: every variant of seed 0 first) and the skipped variants."""

    config: SweepConfig
    base: Recipe
    """The base recipe with the shared overrides (for the report's settings)."""
    runs: list[PlannedRun] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """Variant name -> why it is not run."""

    def of(self, variant: str) -> list[PlannedRun]:
        """The runs of ``variant`` in seed order."""
        return sorted((r for r in self.runs if r.variant == variant), key=lambda r: r.seed)


def _check_extra(extra: Sequence[str]) -> None:
    for item in extra:
        key = override_key(item)
        if key in FLAG_KEYS:
            raise AntError(f"--set {item}: {key} has its own option, use {FLAG_KEYS[key]}")


def _check_variant(variant: Variant) -> None:
    for item in variant.overrides:
        key = override_key(item)
        if key.startswith(SHARED_PREFIXES) or key in SHARED_KEYS:
            raise AntError(
                f"variant '{variant.name}': {item}: the evaluation, data and budget must be the "
                "same for every variant; set them for all runs with the options or --set"
            )


def make_plan(config: SweepConfig) -> Plan:
    """Resolve and validate every run of the sweep (nothing is trained or written)."""
    if config.steps % config.evaluation.every:
        raise AntError(
            f"--steps {config.steps} is not a multiple of --eval-every {config.evaluation.every}: "
            "the final evaluation must fall on the last step"
        )
    if not config.seeds:
        raise AntError("--seeds names no seed")
    _check_extra(config.extra)
    recipe_file = str(find_recipe(config.recipe).resolve())
    shared = [f"data.shards={config.data}"] if config.data else []
    shared += list(config.extra)
    probe = load_recipe(recipe_file, shared)
    shards = probe.data.shards
    if shards is None:
        raise AntError(f"{config.recipe} sets no data.shards: pass --data SHARDS")
    fixed = [*config.evaluation.overrides(shards), f"train.steps={config.steps}"]
    base = load_recipe(recipe_file, [*shared, *fixed])
    if config.affinity is not None and not config.affinity.is_file():
        raise AntError(
            f"--affinity {config.affinity}: file not found (`ant analyze affinity` writes "
            "DIR/affinity.npy)"
        )
    plan = Plan(config=config, base=base)
    runs_dir = config.out / RUNS_DIR
    per_variant: list[list[PlannedRun]] = []
    for variant in config.variants:
        _check_variant(variant)
        overrides = [*shared, *variant.overrides, *fixed]
        resolved = load_recipe(recipe_file, overrides)
        if resolved.clustering.objective == "gradient" and resolved.clustering.affinity is None:
            if config.affinity is None:
                plan.skipped[variant.name] = (
                    "the gradient objective needs a task-affinity matrix: make one with `ant "
                    "analyze affinity RUN/checkpoints/step-N.pt --data SHARDS --out DIR` and "
                    "pass --affinity DIR/affinity.npy"
                )
                continue
            overrides.append(f"clustering.affinity={config.affinity}")
        runs = []
        for seed in config.seeds:
            with_seed = (*overrides, f"train.seed={seed}")
            runs.append(
                PlannedRun(
                    variant=variant.name,
                    seed=seed,
                    directory=runs_dir / f"{variant.name}-s{seed}",
                    recipe_file=recipe_file,
                    overrides=with_seed,
                    recipe=load_recipe(recipe_file, with_seed),
                )
            )
        per_variant.append(runs)
    for index in range(len(config.seeds)):
        plan.runs.extend(runs[index] for runs in per_variant)
    return plan


# --- the state of a run on disk -------------------------------------------------------------

NEW, PARTIAL, FINISHED = "new", "partial", "finished"
ARCHIVE_FILE = "archived.json"
"""Marks a run copied without checkpoints by ``--archive``: ``{"step": budget}``."""


def resume_step(run: PlannedRun) -> int:
    """The step a run has reached: its newest checkpoint, else the step it was archived at
    (``RUN/archived.json``), else 0."""
    found = list_checkpoints(run.directory)
    if found:
        return found[-1][0]
    return archived_step(run) or 0


def archived_step(run: PlannedRun) -> int | None:
    """The budget an archived run (``RUN/archived.json``) finished at; ``None`` if not archived."""
    path = run.directory / ARCHIVE_FILE
    if not path.is_file():
        return None
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["step"])
    except (ValueError, KeyError, TypeError) as err:
        raise AntError(f"{path} is not an archive marker ({err}): delete it and the run") from err


def run_state(run: PlannedRun) -> str:
    """``finished`` (a checkpoint at the budget step, or archived there), ``partial`` (an
    earlier checkpoint) or ``new``."""
    steps = run.recipe.train.steps
    if checkpoint_path(run.directory, steps).is_file():
        return FINISHED
    archived = archived_step(run)
    if archived == steps:
        return FINISHED
    if archived is not None:
        raise AntError(
            f"{run.directory} was archived at step {archived} without checkpoints and cannot "
            f"train to --steps {steps}: ask for --steps {archived} or use another --out"
        )
    found = list_checkpoints(run.directory)
    if found and found[-1][0] > steps:
        raise AntError(
            f"{run.directory} has trained past --steps {steps} (to step {found[-1][0]}) but has "
            f"no checkpoint at step {steps}: ask for --steps {found[-1][0]} or use another --out"
        )
    return PARTIAL if found else NEW


IGNORED_KEYS = (("train", "steps"), ("name",))
"""Keys that may differ between a run's recipe and the plan: the budget can be raised."""
PATH_KEYS = (("clustering", "affinity"),)
"""File keys compared by the file they name: relative (to the working directory) or absolute."""


def recipe_differences(run: PlannedRun) -> list[str]:
    """Keys where the recipe a run was trained with (``RUN/recipe.yaml``) differs from the plan.

    Empty for a new run. ``train.steps`` and ``name`` are ignored: raising ``--steps`` resumes
    finished runs towards the new budget. :data:`PATH_KEYS` are compared as resolved paths.
    """
    path = run.directory / "recipe.yaml"
    if not path.is_file():
        return []
    old = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    new = parse_yaml(dump_recipe(run.recipe), "plan")
    for section, *rest in IGNORED_KEYS:
        for tree in (old, new):
            if isinstance(tree, dict):
                if rest and isinstance(tree.get(section), dict):
                    tree[section].pop(rest[0], None)
                elif not rest:
                    tree.pop(section, None)
    for tree in (old, new):
        for section, key in PATH_KEYS:
            part = tree.get(section) if isinstance(tree, dict) else None
            if isinstance(part, dict) and isinstance(part.get(key), str):
                part[key] = str(Path(part[key]).resolve())
    return changed_keys(old, new)


def check_consistent(plan: Plan) -> None:
    """Refuse to resume a run that was trained with other settings than the plan's."""
    for run in plan.runs:
        keys = recipe_differences(run)
        if keys:
            shown = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
            raise AntError(
                f"{run.directory} was trained with other settings ({shown}) than this sweep "
                "asks for: rerun with the same options, use another --out, or delete that run"
            )
