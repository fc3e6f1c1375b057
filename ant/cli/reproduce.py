"""``ant reproduce``: train variants x seeds on one recipe, evaluate alike, tabulate and plot."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ant.cli.options import OVERRIDE_SETTINGS, device_option
from ant.core.errors import AntError, Preempted
from ant.experiments.variants import PRESETS


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or ``0-2`` (or a mix, ``0-2,7``) -> the seeds, each once, in order.

    >>> parse_seeds("0-2,7,1")
    [0, 1, 2, 7]
    """
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        first, sep, last = part.partition("-")
        try:
            values = range(int(first), int(last) + 1) if sep and first else [int(part)]
        except ValueError:
            raise AntError(f"--seeds {text}: expected integers like 0,1,2 or 0-2") from None
        seeds.extend(v for v in values if v not in seeds)
    if not seeds:
        raise AntError(f"--seeds {text}: no seed given")
    return seeds


def default_eval_every(steps: int) -> int:
    """A tenth of the budget when it divides evenly, else only the last step."""
    return steps // 10 if steps >= 10 and steps % 10 == 0 else steps


@click.command("reproduce", context_settings=OVERRIDE_SETTINGS)
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option(
    "--recipe",
    default="digits_dit",
    show_default=True,
    help="Base recipe (a path or a shipped recipe's name).",
)
@click.option(
    "--variants",
    "variants_spec",
    default="paper-digits",
    show_default=True,
    help=f"A YAML file of variants, or comma-separated presets ({', '.join(PRESETS)}), "
    "variant names (vanilla, minsnr, uw-timestep, ...) and METHOD-OBJECTIVE names.",
)
@click.option("--seeds", default="0,1,2", show_default=True, help="e.g. 0,1,2 or 0-4.")
@click.option("--steps", type=int, help="Training steps per run [default: the recipe's].")
@click.option(
    "--eval-every", type=int, help="Evaluate every M steps; must divide --steps [default: 1/10]."
)
@click.option("--eval-samples", type=int, default=500, show_default=True, help="Per evaluation.")
@click.option("--metrics", default="fd", show_default=True, help="eval.metrics, comma-separated.")
@click.option("--feature-extractor", help="[default: classifier:DATA, the training shards]")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim"]), default="ddim", show_default=True)
@click.option("--sampler-steps", type=int, default=25, show_default=True)
@click.option("--cfg-scale", type=float, help="[default: the recipe's sample.cfg_scale]")
@click.option("--data", help="Training shards for every run (data.shards).")
@click.option(
    "--affinity",
    type=click.Path(path_type=Path),
    help="Task-affinity matrix (`ant analyze affinity`) for gradient-objective variants.",
)
@click.option(
    "--set",
    "extra",
    multiple=True,
    metavar="KEY=VALUE",
    help="The same as a KEY=VALUE argument (the older spelling).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("runs/reproduce"), show_default=True
)
@click.option("--launcher", help='Prefix of `-m ant train`, e.g. "torchrun --nproc_per_node 2".')
@device_option
@click.option("--jobs", type=int, default=1, show_default=True, help="Runs trained at once.")
@click.option(
    "--gpus-per-job",
    type=int,
    help="GPUs of each concurrent run: job slot i sees GPUs i*G..i*G+G-1 (CUDA_VISIBLE_DEVICES).",
)
@click.option(
    "--reference",
    default="vanilla",
    show_default=True,
    help="The variant whose final mean the others must reach.",
)
@click.option("--band", type=click.Choice(["std", "minmax"]), default="std", show_default=True)
@click.option("--flat-window", type=float, default=0.25, show_default=True)
@click.option("--flat-tolerance", type=float, default=0.05, show_default=True)
@click.option("--report-only", is_flag=True, help="Only aggregate what is on disk; no training.")
@click.option(
    "--archive",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also copy the finished runs without checkpoints (recipe, metrics) and the report "
    "into this folder; a later sweep with it as --out trains only what is missing.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and the commands; no training.")
@click.option("--no-progress", is_flag=True, help="No progress bar (lines with ETA remain).")
def reproduce_command(
    overrides: tuple[str, ...],
    recipe: str,
    variants_spec: str,
    seeds: str,
    steps: int | None,
    eval_every: int | None,
    eval_samples: int,
    metrics: str,
    feature_extractor: str | None,
    sampler: str,
    sampler_steps: int,
    cfg_scale: float | None,
    data: str | None,
    affinity: Path | None,
    extra: tuple[str, ...],
    out: Path,
    launcher: str | None,
    device_choice: str,
    jobs: int,
    gpus_per_job: int | None,
    reference: str,
    band: str,
    flat_window: float,
    flat_tolerance: float,
    report_only: bool,
    archive: Path | None,
    dry_run: bool,
    no_progress: bool,
) -> None:
    """Does it reproduce the paper? Train every variant x seed of a base recipe, evaluate the
    EMA model every M steps with identical settings, and write OUT/results.json, results.md
    and curves_*.png.

    Runs live in OUT/runs/<variant>-s<seed> and train as `ant train --resume` subprocesses
    (logs in OUT/logs/): rerunning the command skips finished runs and resumes interrupted
    ones. The default preset paper-digits is vanilla, minsnr (Min-SNR-5), uw x {timestep, snr,
    gradient}, pcgrad-timestep and nashmtl-timestep, k = 5; uw-gradient needs --affinity.
    KEY=VALUE arguments override the base recipe of every run (`model.name=DiT-T/4`).
    """
    from ant.experiments.plan import EvalSettings, SweepConfig, check_consistent, make_plan
    from ant.experiments.report import Flattening, describe_plan, write_report
    from ant.experiments.sweep import Sweep, load_state, sweep_lock, train_command
    from ant.experiments.variants import parse_variants
    from ant.recipe import load_recipe

    extra = (*extra, *overrides)
    for name, value in (("--eval-samples", eval_samples), ("--sampler-steps", sampler_steps)):
        if value < 1:
            raise AntError(f"{name} must be at least 1, got {value}")
    if not 0.0 < flat_window <= 1.0 or flat_tolerance <= 0.0:
        raise AntError("--flat-window must be in (0, 1] and --flat-tolerance positive")
    if steps is None:
        steps = load_recipe(recipe, extra).train.steps
    if steps < 1:
        raise AntError(f"--steps must be at least 1, got {steps}")
    every = eval_every if eval_every is not None else default_eval_every(steps)
    if every < 1:
        raise AntError(f"--eval-every must be at least 1, got {every}")
    names = tuple(m.strip() for m in metrics.split(",") if m.strip())
    config = SweepConfig(
        recipe=recipe,
        variants=parse_variants(variants_spec),
        seeds=parse_seeds(seeds),
        steps=steps,
        evaluation=EvalSettings(
            every=every,
            num_samples=eval_samples,
            metrics=names or ("fd",),
            feature_extractor=feature_extractor,
            sampler=sampler,
            sampler_steps=sampler_steps,
            cfg_scale=cfg_scale,
        ),
        out=out,
        data=data,
        affinity=affinity,
        extra=extra,
    )
    plan = make_plan(config)
    for name, reason in plan.skipped.items():
        click.echo(f"skipping {name}: {reason}", err=True)
    if dry_run:
        click.echo(describe_plan(plan), nl=False)
        for run in plan.runs:
            click.echo(shlex.join(train_command(run, launcher, device_choice)))
        return
    check_consistent(plan)
    flattening = Flattening(flat_window, flat_tolerance)
    code = 0
    if report_only:
        records = load_state(out)
    else:
        with sweep_lock(out):
            sweep = Sweep(
                plan,
                launcher=launcher,
                device=device_choice,
                jobs=jobs,
                gpus_per_job=gpus_per_job,
                show=not no_progress,
            )
            outcome = sweep.run()
            records = sweep.records
        click.echo(
            f"sweep: {len(outcome.trained)} trained, {len(outcome.skipped)} already finished, "
            f"{len(outcome.failed)} failed, in {outcome.seconds:.1f} s",
            err=True,
        )
        if outcome.interrupted:
            click.echo("interrupted: rerun the same command to resume", err=True)
            code = Preempted.exit_code
        elif outcome.failed:
            code = 1
    results, written = write_report(
        plan, records, reference=reference, flattening=flattening, band=band
    )
    _summary(results)
    if archive is not None:
        from ant.experiments.archive import archive_sweep

        archived_plan, archived = archive_sweep(plan, archive)
        written += write_report(
            archived_plan, records, reference=reference, flattening=flattening, band=band
        )[1]
        click.echo(f"archived {len(archived)} finished runs to {archive}", err=True)
    for path in written:
        click.echo(f"wrote {path}")
    if code:
        sys.exit(code)


def _summary(results: dict[str, object]) -> None:
    primary = results.get("primary_metric")
    variants = results.get("variants")
    if not isinstance(variants, list):
        return
    for variant in variants:
        if "skipped" in variant:
            click.echo(f"{variant['name']:<20} skipped")
            continue
        final = variant["final"].get(primary) if primary else None
        value = "–"
        if final and final["mean"] is not None:
            value = f"{final['mean']:.4g}"
            if final["std"] is not None:
                value += f" ± {final['std']:.2g}"
        metric = f"  {primary}: {value}" if primary else ""
        click.echo(f"{variant['name']:<20} {variant['num_seeds']} seeds{metric}")
