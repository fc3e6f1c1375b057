"""``ant analyze ntg``: negative transfer gaps of interval-specific models against a shared one."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ant.core.runtime import DEVICES
from ant.diffusion.samplers import SamplerName
from ant.sampling.generate import SAMPLERS


@click.command("ntg")
@click.option("--shared", required=True, metavar="CKPT", help="The model trained on all timesteps.")
@click.option(
    "--specific",
    multiple=True,
    required=True,
    metavar="CKPT@a:b",
    help="A model trained on timesteps a..b (inclusive, 0-indexed); repeatable. Without @a:b "
    "its recipe's train.timestep_range is used.",
)
@click.option("--ref", help="Reference data. [shared recipe: eval.ref, else data.shards]")
@click.option("--num-samples", "-n", type=int, help="[shared recipe: eval.num_samples]")
@click.option(
    "--feature-extractor", help="inception or classifier:SHARDS. [recipe: eval.feature_extractor]"
)
@click.option("--weights", multiple=True, help="Extractor weights file (see `ant eval --help`).")
@click.option("--sampler", type=click.Choice(SAMPLERS), help="[recipe: sample.sampler]")
@click.option("--steps", type=int, help="[recipe: sample.steps]")
@click.option("--eta", type=float, help="[recipe: sample.eta]")
@click.option("--cfg-scale", type=float, help="[recipe: sample.cfg_scale]")
@click.option("--seed", type=int, help="[recipe: sample.seed]")
@click.option("--batch-size", type=int, help="[recipe: eval.batch_size]")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for samples, ntg.json and ntg.png. [default: RUN/ntg/<ckpt>-<settings>]",
)
@click.option(
    "--device", "device_choice", type=click.Choice(DEVICES), default="auto", show_default=True
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def ntg_command(
    shared: str,
    specific: tuple[str, ...],
    ref: str | None,
    num_samples: int | None,
    feature_extractor: str | None,
    weights: tuple[str, ...],
    sampler: SamplerName | None,
    steps: int | None,
    eta: float | None,
    cfg_scale: float | None,
    seed: int | None,
    batch_size: int | None,
    out: Path | None,
    device_choice: str,
    no_progress: bool,
) -> None:
    """Negative transfer gap of each interval: NTG(I) = P(composed) - P(shared).

    The composed denoiser runs the interval-specific model on timesteps a..b and the shared
    model elsewhere; P is FID (FD with a non-Inception extractor), lower is better, so NTG < 0
    means negative transfer: the specific model did better on its interval. All sample sets
    use the same seed; they are kept in OUT/samples/ and resume when interrupted.
    """
    from ant.evaluation.ntg import NTGOptions, run_ntg

    report = run_ntg(
        NTGOptions(
            shared=shared,
            specific=specific,
            ref=ref,
            num_samples=num_samples,
            feature_extractor=feature_extractor,
            weights=weights,
            sampler=sampler,
            steps=steps,
            eta=eta,
            cfg_scale=cfg_scale,
            seed=seed,
            batch_size=batch_size,
            out=out,
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
