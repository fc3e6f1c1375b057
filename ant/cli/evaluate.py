"""``ant eval`` (sample a checkpoint and measure it) and ``ant plot`` (metric curves of runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ant.cli.options import (
    OVERRIDE_SETTINGS,
    device_option,
    eval_flags,
    flag_overrides,
    no_progress_option,
    sample_flags,
)


def parse_metrics(value: str | None) -> list[str] | None:
    """``fid,isc`` -> ["fid", "isc"]; ``None`` stays ``None``."""
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def metrics_table(title: str, values: dict[str, float]) -> Table:
    """A two-column table of metric values."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in values.items():
        table.add_row(name, f"{value:.6g}")
    return table


@click.command("eval", context_settings=OVERRIDE_SETTINGS)
@click.argument("checkpoint", metavar="CKPT")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@eval_flags
@click.option("--metrics", help="Comma-separated, e.g. fid,isc,kid,prc. [recipe: eval.metrics]")
@click.option(
    "--feature-extractor",
    help="inception, vgg16 or classifier:SHARDS. [recipe: eval.feature_extractor]",
)
@click.option(
    "--weights",
    multiple=True,
    help="Extractor weights file, or NAME=PATH (e.g. vgg16=...) for another extractor; "
    "repeatable. [recipe: eval.weights, else the torch hub cache]",
)
@sample_flags
@click.option(
    "--samples-dir",
    type=click.Path(path_type=Path),
    help="Where the samples go. [default: RUN/eval/<checkpoint>-<settings>/samples]",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="The metrics JSON. [default: metrics.json beside the samples folder]",
)
@click.option(
    "--npz",
    type=click.Path(path_type=Path),
    help="Also export the samples as an ADM-style .npz (arr_0 uint8 NHWC) for the TF evaluator.",
)
@click.option("--raw-weights", is_flag=True, help="Use the trained weights, not the EMA ones.")
@device_option
@no_progress_option
def eval_command(
    checkpoint: str,
    overrides: tuple[str, ...],
    metrics: str | None,
    feature_extractor: str | None,
    weights: tuple[str, ...],
    samples_dir: Path | None,
    out: Path | None,
    npz: Path | None,
    raw_weights: bool,
    device_choice: str,
    no_progress: bool,
    **flags: Any,
) -> None:
    """Sample CKPT (a checkpoint, a run directory or RUN/checkpoints/latest.pt) and measure it.

    Samples are drawn with the EMA weights into a folder, one PNG each, as they are made: an
    interrupted evaluation resumes where it stopped. Under torchrun the ranks share the
    samples and rank 0 computes the metrics. Reference statistics are cached by content hash
    in $ANT_CACHE (default ~/.cache/ant), so the next evaluation against the same reference
    extracts no reference features. Weights are never downloaded: a missing file is an error
    that says where to get it. Defaults come from the checkpoint recipe's sample and eval
    sections, changed by KEY=VALUE overrides of those two sections (`sample.cfg_scale=1.5
    eval.num_samples=50000`); an option given too wins over its key.
    """
    from ant.evaluation.run import EvalOptions, evaluate_checkpoint

    report = evaluate_checkpoint(
        EvalOptions(
            checkpoint=checkpoint,
            feature_extractor=feature_extractor,
            weights=weights,
            samples_dir=samples_dir,
            out=out,
            npz=npz,
            raw_weights=raw_weights,
            device=device_choice,
            progress=not no_progress,
            overrides=(*overrides, *flag_overrides({**flags, "metrics": parse_metrics(metrics)})),
        )
    )
    if report is None:
        return
    sampling = report.sampling
    title = (
        f"step {report.step}, {report.weights} weights, {sampling.num_samples} samples, "
        f"{sampling.sampler} {sampling.steps} steps, cfg {sampling.cfg_scale:g}, "
        f"{report.feature_extractor}"
    )
    Console().print(metrics_table(title, report.metrics))
    reference = report.reference or {}
    cached = " (cached statistics)" if reference.get("cached") else ""
    click.echo(
        f"reference: {reference.get('spec', 'none')}{cached}; samples: {sampling.samples_dir} "
        f"({sampling.written} drawn now); {report.seconds['total']:.1f} s"
    )
    click.echo(f"metrics: {out or Path(sampling.samples_dir).parent / 'metrics.json'}")


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--metric",
    default="loss",
    show_default=True,
    help="A key of metrics.jsonl: loss, fd, fid, cluster_loss, cluster_weight, cluster_loss/2, ...",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("curves.png"), show_default=True
)
@click.option("--log-y", is_flag=True, help="Logarithmic y axis.")
@click.option(
    "--conflict",
    is_flag=True,
    help="Draw the per-cluster gradient cosines over training (one RUN; see train.conflict_every).",
)
def plot_command(
    runs: tuple[Path, ...], metric: str, out: Path, log_y: bool, conflict: bool
) -> None:
    """Plot METRIC against the training step for every RUN directory, on one figure.

    Scalar metrics get one line per run; per-cluster metrics (cluster_loss, cluster_weight) get
    one panel per run with one line per cluster. Evaluation metrics logged during training as
    eval/NAME are found by NAME too. --conflict draws the gradient-conflict figure of one run.
    """
    from ant.evaluation.plot import plot_conflict, plot_curves

    if conflict:
        if len(runs) != 1:
            raise click.UsageError("--conflict draws one run: pass exactly one RUN directory")
        click.echo(f"wrote {plot_conflict(runs[0], out)}")
        return
    click.echo(f"wrote {plot_curves(list(runs), metric, out, log_y=log_y)}")
