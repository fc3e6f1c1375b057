"""The ``ant data`` command group: ``pack``, ``info`` and ``encode`` (:mod:`ant.data.encode`)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from ant.cli import LazyCommand, LazyGroup
from ant.data.meta import DEFAULT_SHARD_SIZE


@click.group("data", cls=LazyGroup)
def data_group() -> None:
    """Pack data sets into WebDataset shards and inspect them."""


@data_group.command("pack")
@click.argument("source")
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--image-size",
    type=click.IntRange(min=1),
    default=None,
    help="Resize (digits) or ADM centre-crop (folder, npz) every image to SxS.",
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=DEFAULT_SHARD_SIZE,
    show_default=True,
    help="Samples per shard.",
)
@click.option("--overwrite", is_flag=True, help="Replace the shards in a non-empty OUT.")
def pack_command(
    source: str, out: Path, image_size: int | None, shard_size: int, overwrite: bool
) -> None:
    """Pack SOURCE into WebDataset shards OUT/shard-NNNNNN.tar plus OUT/meta.json.

    SOURCE is NAME or NAME:ARG: digits (scikit-learn's 8x8 digits), folder:PATH (class
    sub-folders or a flat folder of images), npz:PATH (arrays x and optional y), or a source
    added by a plugin.
    """
    from ant.data.pack import pack

    meta = pack(source, out, image_size=image_size, shard_size=shard_size, overwrite=overwrite)
    height, width, channels = meta.shape
    labels = f"{meta.num_classes} classes" if meta.labelled else "unlabelled"
    click.echo(
        f"packed {meta.count} samples ({height}x{width}x{channels}, {labels}) "
        f"into {len(meta.shards)} shard(s) in {out}"
    )


@data_group.command("info")
@click.argument("shards")
@click.option("--verify", "check", is_flag=True, help="Read every sample and check the counts.")
def info_command(shards: str, check: bool) -> None:
    """Describe SHARDS: a packed folder, a brace pattern like shard-{000000..000009}.tar, or a URL.

    Prints the sample count, shape, channels, classes and the shard list.
    """
    from ant.data.info import render, summarize, verdict, verify
    from ant.data.shards import resolve_shards

    shard_set = resolve_shards(shards)
    summary = summarize(shard_set)
    checks = verify(shard_set) if check else None
    render(shard_set, summary, checks, Console())
    if checks is not None:
        click.echo(verdict(summary, checks))


data_group.add_command(LazyCommand("encode", "ant.cli.latent:encode_command"))
