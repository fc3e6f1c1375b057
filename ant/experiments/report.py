"""The results of a sweep: ``results.json``, ``results.md`` and convergence plots.

Only finished runs (a checkpoint at the budget step and an evaluation there) count: a variant's
numbers are over its finished seeds, and the others are listed as pending or failed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ant.core.atomic import atomic_write
from ant.core.logbook import read_metrics
from ant.experiments.aggregate import (
    SeedCurve,
    eval_curve,
    eval_metrics,
    first_reach,
    flattened_at,
    lower_is_better,
    mean_eval_seconds,
    paired,
    relative_change,
    seconds_per_step,
    seed_curve,
    summarize,
)
from ant.experiments.plan import FINISHED, Plan, run_state
from ant.experiments.sweep import RunRecord

FORMAT = "ant-reproduce/1"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PRIMARY_ORDER = ("fid", "fd")
PLOTTED = ("accuracy",)
"""Curves drawn besides the primary metric's, when logged."""


@dataclass(frozen=True)
class Flattening:
    """The flattening criterion: relative change over the last ``window`` below ``tolerance``."""

    window: float = 0.25
    tolerance: float = 0.05


def _number(value: float | None) -> float | None:
    """``value`` as a JSON number; ``None`` (null) for a missing or non-finite one."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def primary_metric(names: Sequence[str]) -> str | None:
    """The metric the table ranks by: FID, else FD, else the first logged one."""
    for name in PRIMARY_ORDER:
        if name in names:
            return name
    return names[0] if names else None


def _curve_json(curve: SeedCurve) -> dict[str, Any]:
    return {
        "steps": curve.steps,
        "mean": [_number(p.mean) for p in curve.points],
        "std": [_number(p.std) for p in curve.points],
        "min": [_number(p.minimum) for p in curve.points],
        "max": [_number(p.maximum) for p in curve.points],
    }


def build_results(
    plan: Plan,
    records: Mapping[str, RunRecord],
    *,
    reference: str = "vanilla",
    flattening: Flattening = Flattening(),
) -> dict[str, Any]:
    """The ``results.json`` document of ``plan``'s runs as they are on disk now."""
    config = plan.config
    base = plan.base
    steps = config.steps
    per_run: dict[str, list[dict[str, Any]]] = {}
    metrics: list[str] = []
    for run in plan.runs:
        log = read_metrics(run.directory)
        state = run_state(run)
        record = records.get(run.name, RunRecord())
        names = eval_metrics(log)
        metrics.extend(n for n in names if n not in metrics)
        finished = state == FINISHED and any(steps in eval_curve(log, n) for n in names)
        entry = {
            "seed": run.seed,
            "directory": str(run.directory),
            "state": state if state != FINISHED or finished else "finished-without-final-eval",
            "finished": finished,
            "returncode": record.returncode,
            "wall_seconds": _number(record.wall_seconds) if record.attempts else None,
            "seconds_per_step": _number(seconds_per_step(log, base.train.global_batch_size)),
            "eval_seconds": _number(mean_eval_seconds(log)),
            "repaired_evals": record.repaired_evals,
            "log": log,
        }
        per_run.setdefault(run.variant, []).append(entry)
    primary = primary_metric(metrics)
    variants: list[dict[str, Any]] = []
    for variant in config.variants:
        if variant.name in plan.skipped:
            variants.append(
                {
                    "name": variant.name,
                    "overrides": list(variant.overrides),
                    "skipped": plan.skipped[variant.name],
                }
            )
            continue
        entries = per_run.get(variant.name, [])
        done = [e for e in entries if e["finished"]]
        result: dict[str, Any] = {
            "name": variant.name,
            "overrides": list(variant.overrides),
            "num_seeds": len(done),
            "seeds": [e["seed"] for e in done],
            "pending_seeds": [e["seed"] for e in entries if not e["finished"]],
            "failed_seeds": [
                e["seed"] for e in entries if not e["finished"] and e["returncode"] not in (0, None)
            ],
            "final": {},
            "curves": {},
        }
        for name in metrics:
            curves = [eval_curve(e["log"], name) for e in done]
            curves = [c for c in curves if steps in c]
            if len(curves) != len(done) or not curves:
                continue
            combined = seed_curve(curves)
            result["curves"][name] = _curve_json(combined)
            final = summarize([c[steps] for c in curves])
            result["final"][name] = {
                "mean": _number(final.mean),
                "std": _number(final.std),
                "min": _number(final.minimum),
                "max": _number(final.maximum),
                "values": [_number(c[steps]) for c in curves],
            }
            if name == primary:
                change = relative_change(combined.steps, combined.mean, flattening.window)
                result["relative_change"] = _number(change)
                result["flattened"] = None if change is None else change < flattening.tolerance
                result["flattened_at"] = flattened_at(
                    combined.steps, combined.mean, flattening.window, flattening.tolerance
                )
        timing = [e["seconds_per_step"] for e in done if e["seconds_per_step"] is not None]
        evals = [e["eval_seconds"] for e in done if e["eval_seconds"] is not None]
        walls = [e["wall_seconds"] for e in done if e["wall_seconds"] is not None]
        result["seconds_per_step"] = _number(summarize(timing).mean) if timing else None
        result["eval_seconds"] = _number(summarize(evals).mean) if evals else None
        result["wall_seconds"] = _number(summarize(walls).mean) if walls else None
        result["runs"] = [{k: v for k, v in e.items() if k != "log"} for e in entries]
        variants.append(result)
    _add_reach(variants, primary, reference)
    _add_paired(variants, primary, reference)
    return {
        "format": FORMAT,
        "recipe": config.recipe,
        "steps": steps,
        "seeds": list(config.seeds),
        "primary_metric": primary,
        "metrics": metrics,
        "reference_variant": reference,
        "reference_final": _reference_final(variants, primary, reference),
        "evaluation": {
            "every": base.eval.every,
            "num_samples": base.eval.num_samples,
            "metrics": list(base.eval.metrics),
            "feature_extractor": base.eval.feature_extractor,
            "reference": base.eval.ref or base.data.shards,
            "weights": "EMA",
            "sampler": base.sample.sampler,
            "sampler_steps": base.sample.steps,
            "cfg_scale": base.sample.cfg_scale,
            "seed": base.sample.seed,
        },
        "training": {
            "model": base.model.name,
            "global_batch_size": base.train.global_batch_size,
            "lr": base.optim.lr,
            "ema_decay": base.train.ema_decay,
            "extra_overrides": list(config.extra),
        },
        "flattening": {"window": flattening.window, "tolerance": flattening.tolerance},
        "variants": variants,
    }


def _reference_final(
    variants: Sequence[Mapping[str, Any]], primary: str | None, reference: str
) -> float | None:
    for variant in variants:
        if variant["name"] == reference and primary in variant.get("final", {}):
            value = variant["final"][primary]["mean"]
            return float(value) if value is not None else None
    return None


def _add_reach(variants: list[dict[str, Any]], primary: str | None, reference: str) -> None:
    target = _reference_final(variants, primary, reference)
    for variant in variants:
        curve = variant.get("curves", {}).get(primary) if primary else None
        if "skipped" in variant:
            continue
        if target is None or primary is None or curve is None:
            variant["reaches_reference_at"] = None
            continue
        variant["reaches_reference_at"] = first_reach(
            curve["steps"], curve["mean"], target, lower_is_better=lower_is_better(primary)
        )


def _seed_values(variant: Mapping[str, Any], metric: str) -> dict[int, float]:
    final = variant.get("final", {}).get(metric)
    if final is None:
        return {}
    return dict(zip(variant["seeds"], final["values"], strict=True))


def _add_paired(variants: list[dict[str, Any]], primary: str | None, reference: str) -> None:
    ref = next((v for v in variants if v["name"] == reference), None)
    for variant in variants:
        if "skipped" in variant:
            continue
        found = None
        if primary is not None and ref is not None and variant is not ref:
            found = paired(
                _seed_values(variant, primary),
                _seed_values(ref, primary),
                lower_is_better=lower_is_better(primary),
            )
        variant["vs_reference"] = (
            None
            if found is None
            else {
                "seeds": found.seeds,
                "better": found.better,
                "differences": [_number(d) for d in found.differences],
                "mean_difference": _number(found.mean_difference),
            }
        )


def _vs(found: Mapping[str, Any] | None) -> str:
    if not found:
        return "–"
    count = f"{found['better']}/{len(found['seeds'])}"
    difference = found["mean_difference"]
    return count if difference is None else f"{count} ({difference:+.3g})"


def write_json(results: Mapping[str, Any], out: Path) -> Path:
    """``OUT/results.json``, atomically."""
    path = out / RESULTS_JSON
    with atomic_write(path, text=True) as handle:
        handle.write(json.dumps(results, indent=1) + "\n")
    return path


def _pm(final: Mapping[str, Any] | None) -> str:
    if not final or final.get("mean") is None:
        return "–"
    text = f"{final['mean']:.4g}"
    return f"{text} ± {final['std']:.2g}" if final.get("std") is not None else text


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def _time(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def markdown(results: Mapping[str, Any], plots: Sequence[Path]) -> str:
    """The ``results.md`` text: settings, the table, notes and the plots."""
    primary = results["primary_metric"] or "metric"
    evaluation = results["evaluation"]
    flat = results["flattening"]
    reference = results["reference_variant"]
    target = results["reference_final"]
    seeds = ", ".join(str(s) for s in results["seeds"])
    lines = [
        "# Reproduction results",
        "",
        f"Recipe `{results['recipe']}` ({results['training']['model']}, batch "
        f"{results['training']['global_batch_size']}), {results['steps']} steps, seeds {seeds}.",
        f"Every run's EMA model was evaluated every {evaluation['every']} steps on "
        f"{evaluation['num_samples']} samples ({evaluation['sampler']} "
        f"{evaluation['sampler_steps']} steps, CFG {evaluation['cfg_scale']}, "
        f"sample seed {evaluation['seed']}) with "
        f"`{evaluation['feature_extractor']}` against `{evaluation['reference']}`.",
        "",
    ]
    if results["training"]["extra_overrides"]:
        shown = " ".join(f"`{o}`" for o in results["training"]["extra_overrides"])
        lines += [f"Overrides for every run: {shown}.", ""]
    other = [m for m in results["metrics"] if m != primary and m in PLOTTED]
    header = ["variant", "seeds", f"final {primary.upper()}"]
    header += [f"final {m}" for m in other]
    header += [
        f"better than {reference} (paired seeds)",
        f"reaches {reference}'s final {primary.upper()} at",
        "flattened",
        "s/step",
        "eval s",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant in results["variants"]:
        if "skipped" in variant:
            row = [variant["name"], "skipped", *["–"] * (len(header) - 2)]
            lines.append("| " + " | ".join(row) + " |")
            continue
        reach = variant.get("reaches_reference_at")
        reach_text = "–" if target is None else (f"{reach}" if reach else "not reached")
        final = variant["final"]
        pending = variant["pending_seeds"]
        seeds_text = str(variant["num_seeds"]) + (f" ({len(pending)} pending)" if pending else "")
        row = [variant["name"], seeds_text, _pm(final.get(primary))]
        row += [_pm(final.get(m)) for m in other]
        row += [
            _vs(variant.get("vs_reference")),
            reach_text,
            _yes_no(variant.get("flattened")),
            _time(variant.get("seconds_per_step")),
            _time(variant.get("eval_seconds")),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"- Final values: mean ± sample standard deviation over the finished seeds at step "
        f"{results['steps']}.",
        f"- Better than {reference}: on how many of the seeds both finished the variant's final "
        f"{primary.upper()} is better than {reference}'s with the same seed (same initialisation "
        "and data order), and in brackets the mean per-seed difference (variant - "
        f"{reference}).",
        f"- Reaches: the first evaluated step at which the variant's seed-mean {primary.upper()} "
        f"is at least as good as {reference}'s final mean"
        + (f" ({target:.4g})." if target is not None else " (not available)."),
        f"- Flattened: the seed-mean {primary.upper()} changed by less than "
        f"{flat['tolerance']:.0%} over the last {flat['window']:.0%} of the steps "
        "(|first - last| / last within that window); `flattened_at` in results.json is the "
        "first step from which on that held to the end.",
        "- s/step: median training seconds per step from samples_per_s in metrics.jsonl; "
        "eval s: mean seconds of one evaluation.",
        "",
        "Variants:",
        "",
    ]
    for variant in results["variants"]:
        overrides = " ".join(f"`{o}`" for o in variant["overrides"])
        note = f" Skipped: {variant['skipped']}" if "skipped" in variant else ""
        failed = variant.get("failed_seeds")
        if failed:
            note += f" Failed seeds: {failed} (see logs/)."
        lines.append(f"- **{variant['name']}**: {overrides}.{note}")
    lines.append("")
    for plot in plots:
        lines += [f"![{plot.stem}]({plot.name})", ""]
    return "\n".join(lines)


def write_markdown(results: Mapping[str, Any], plots: Sequence[Path], out: Path) -> Path:
    """``OUT/results.md``, atomically."""
    path = out / RESULTS_MD
    with atomic_write(path, text=True) as handle:
        handle.write(markdown(results, plots))
    return path


LOG_SPAN = 5.0
"""A distance curve whose largest value is this many times its smallest is drawn on a log axis."""


def y_scale(metric: str, values: Sequence[float]) -> str:
    """``log`` for a positive distance (FD, FID) spanning ``LOG_SPAN``× or more, else ``linear``.

    Early evaluations of a diffusion model are far off (digits: FD 250 at step 250, 20-30 at the
    end); on a linear axis they squash the differences between variants that the plot is for.

    >>> y_scale("fd", [250.0, 60.0, 20.0]), y_scale("fd", [40.0, 20.0])
    ('log', 'linear')
    >>> y_scale("accuracy", [0.1, 1.0])
    'linear'
    """
    if not lower_is_better(metric) or not values or min(values) <= 0:
        return "linear"
    return "log" if max(values) >= LOG_SPAN * min(values) else "linear"


def plot_metric(results: Mapping[str, Any], metric: str, out: Path, *, band: str = "std") -> Path:
    """``metric`` against the step: one line per variant (seed mean) with a band over seeds.

    ``band`` is ``std`` (mean ± one sample standard deviation) or ``minmax`` (the seeds' range);
    with one seed there is no band. The reference variant's final mean of the primary metric is
    a dashed horizontal line. The y axis is chosen by :func:`y_scale`; on a log axis a band
    is cut at half the mean, where mean - std may be zero or negative.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.0))
    ax = figure.subplots()
    curves = [
        (variant, variant["curves"][metric])
        for variant in results["variants"]
        if variant.get("curves", {}).get(metric, {}).get("steps")
    ]
    scale = y_scale(metric, [m for _, curve in curves for m in curve["mean"]])
    for variant, curve in curves:
        steps, mean = curve["steps"], curve["mean"]
        (line,) = ax.plot(
            steps,
            mean,
            marker="o" if len(steps) < 30 else None,
            markersize=3,
            label=f"{variant['name']} (n={variant['num_seeds']})",
        )
        if band == "minmax":
            low, high = curve["min"], curve["max"]
        elif all(s is not None for s in curve["std"]):
            low = [m - s for m, s in zip(mean, curve["std"], strict=True)]
            high = [m + s for m, s in zip(mean, curve["std"], strict=True)]
        else:
            low = high = None
        if low is not None and high is not None and variant["num_seeds"] > 1:
            if scale == "log":
                low = [max(v, m / 2) for v, m in zip(low, mean, strict=True)]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    target = results.get("reference_final")
    if metric == results.get("primary_metric") and target is not None:
        ax.axhline(
            target,
            color="grey",
            linestyle="--",
            linewidth=0.8,
            label=f"{results['reference_variant']} final mean",
        )
    ax.set_xlabel("step")
    name = metric.upper() if lower_is_better(metric) else metric
    ax.set_yscale(scale)
    ax.set_ylabel(f"{name} (log scale)" if scale == "log" else name)
    spread = "± 1 std" if band == "std" else "min-max"
    ax.set_title(f"{name} of the EMA model: seed mean, {spread} over seeds", fontsize="medium")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    path = out / f"curves_{metric}.png"
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    return path


def write_report(
    plan: Plan,
    records: Mapping[str, RunRecord],
    *,
    reference: str = "vanilla",
    flattening: Flattening = Flattening(),
    band: str = "std",
) -> tuple[dict[str, Any], list[Path]]:
    """Aggregate the runs and write ``results.json``, the curves and ``results.md``."""
    out = plan.config.out
    results = build_results(plan, records, reference=reference, flattening=flattening)
    plots = []
    primary = results["primary_metric"]
    for metric in [primary, *PLOTTED]:
        if metric and metric in results["metrics"]:
            plots.append(plot_metric(results, metric, out, band=band))
    written = [write_json(results, out), *plots, write_markdown(results, plots, out)]
    return results, written


def describe_plan(plan: Plan) -> str:
    """The plan as YAML: variants with overrides, skipped variants and run directories."""
    data = {
        "recipe": plan.config.recipe,
        "steps": plan.config.steps,
        "seeds": list(plan.config.seeds),
        "variants": {
            v.name: {"overrides": list(v.overrides), "skipped": plan.skipped.get(v.name)}
            for v in plan.config.variants
        },
        "runs": [str(run.directory) for run in plan.runs],
    }
    return yaml.safe_dump(data, sort_keys=False)
