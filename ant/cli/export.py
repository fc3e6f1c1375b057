"""``ant export RUN_OR_CKPT --to diffusers OUT``: hand a trained model to another library."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("source")
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--to",
    "target",
    type=click.Choice(["diffusers"]),
    required=True,
    help="the library to export to",
)
@click.option("--raw-weights", is_flag=True, help="export the trained weights, not the EMA")
@click.option("--overwrite", is_flag=True, help="write into a folder that is not empty")
def export_command(source: str, out: Path, target: str, raw_weights: bool, overwrite: bool) -> None:
    """Export a run's EMA DiT for diffusers (a DiTPipeline folder for latent runs)."""
    from ant.sampling.export import export_diffusers
    from ant.sampling.loading import load_sampling_model

    loaded = load_sampling_model(source, raw_weights=raw_weights)
    for line in export_diffusers(loaded, out, source, overwrite):
        click.echo(line)
