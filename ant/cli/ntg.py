"""``ant analyze ntg``: negative transfer gaps of interval-specific models against a shared one."""

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


@click.command("ntg", context_settings=OVERRIDE_SETTINGS)
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--shared", required=True, metavar="CKPT", help="The model trained on all timesteps.")
@click.option(
    "--specific",
    multiple=True,
    required=True,
    metavar="CKPT@a:b",
    help="A model trained on timesteps a..b (inclusive, 0-indexed); repeatable. Without @a:b "
    "its recipe's train.timestep_range is used.",
)
@eval_flags
@click.option(
    "--feature-extractor", help="inception or classifier:SHARDS. [recipe: eval.feature_extractor]"
)
@click.option("--weights", multiple=True, help="Extractor weights file (see `ant eval --help`).")
@sample_flags
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for samples, ntg.json and ntg.png. [default: RUN/ntg/<ckpt>-<settings>]",
)
@device_option
@no_progress_option
def ntg_command(
    overrides: tuple[str, ...],
    shared: str,
    specific: tuple[str, ...],
    feature_extractor: str | None,
    weights: tuple[str, ...],
    out: Path | None,
    device_choice: str,
    no_progress: bool,
    **flags: Any,
) -> None:
    """Negative transfer gap of each interval: NTG(I) = P(composed) - P(shared).

    The composed denoiser runs the interval-specific model on timesteps a..b and the shared
    model elsewhere; P is FID (FD with a non-Inception extractor), lower is better, so NTG < 0
    means negative transfer: the specific model did better on its interval. All sample sets
    use the same seed; they are kept in OUT/samples/ and resume when interrupted. Settings come
    from the shared model's recipe (sample and eval sections), changed by KEY=VALUE overrides
    (`sample.steps=50 eval.num_samples=2000`); a flag given too wins over its key.
    """
    from ant.evaluation.ntg import NTGOptions, run_ntg

    report = run_ntg(
        NTGOptions(
            shared=shared,
            specific=specific,
            feature_extractor=feature_extractor,
            weights=weights,
            out=out,
            overrides=(*overrides, *flag_overrides(flags)),
            device=device_choice,
            progress=not no_progress,
        )
    )
    if report is None:
        return
    name = report.metric.upper()
    table = Table(title=f"negative transfer gap, shared {name} {report.shared:.4g}")
    for column in ("interval", f"{name} composed", "NTG", "negative transfer"):
        table.add_column(column, justify="right")
    for gap in report.gaps:
        table.add_row(
            str(gap.interval),
            f"{gap.composed:.4g}",
            f"{gap.gap:+.4g}",
            "yes" if gap.negative_transfer else "no",
        )
    Console().print(table)
    click.echo(f"wrote {report.json_path} and {report.plot_path}")
