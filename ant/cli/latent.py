"""``ant data encode``: the command line of :func:`ant.data.encode.encode_shards`."""

from __future__ import annotations

from pathlib import Path

import click

from ant.cli.options import device_option
from ant.data.vae import POSTERIORS, PRECISIONS, VaeSpec


@click.command("encode")
@click.argument("shards")
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--vae",
    "vae_name",
    required=True,
    help="A local AutoencoderKL folder, or a hub name in the local Hugging Face cache "
    "(e.g. stabilityai/sd-vae-ft-ema); never downloaded.",
)
@click.option("--subfolder", default=None, help="The VAE's sub-folder (e.g. vae).")
@click.option(
    "--scale",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Latent scale factor. [default: the VAE config's scaling_factor, else 0.18215]",
)
@click.option("--flip", is_flag=True, help="Also store each flipped image's latent (2x storage).")
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images a pass."
)
@device_option
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="fp32", show_default=True)
@click.option(
    "--posterior",
    type=click.Choice(POSTERIORS),
    default="sample",
    show_default=True,
    help="Draw from the VAE posterior (seeded per sample) or take its mean.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the posterior noise.")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Storage type of the latents.",
)
@click.option("--overwrite", is_flag=True, help="Replace what OUT holds.")
def encode_command(
    shards: str,
    out: Path,
    vae_name: str,
    subfolder: str | None,
    scale: float | None,
    flip: bool,
    batch_size: int,
    device_choice: str,
    precision: str,
    posterior: str,
    seed: int,
    dtype: str,
    overwrite: bool,
) -> None:
    """Encode the image shards SHARDS (from 'ant data pack') into latent shards in OUT.

    OUT gets shard-NNNNNN.tar files of x.npy latents (with the images' keys and labels) and a
    meta.json recording the VAE, its scale and the source. Interrupted? Run the same command
    again: finished shards are kept. Under torchrun the ranks share the shards.
    """
    from ant.data.encode import encode_shards

    spec = VaeSpec(name_or_path=vae_name, subfolder=subfolder, scale=scale, precision=precision)
    meta = encode_shards(
        shards,
        out,
        spec,
        flip=flip,
        batch_size=batch_size,
        device=device_choice,
        posterior=posterior,
        seed=seed,
        dtype=dtype,
        overwrite=overwrite,
    )
    if meta is None:
        return
    height, width, channels = meta.shape
    click.echo(
        f"encoded {meta.count} latents ({channels}x{height}x{width}, scale "
        f"{(meta.latent or {}).get('scale', 0):g}) into {len(meta.shards)} shard(s) in {out}"
    )
