"""``ant sample``: draw samples from a checkpoint into one grid or one file per sample."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ant.cli.options import (
    OVERRIDE_SETTINGS,
    SAMPLE_KEYS,
    device_option,
    flag_overrides,
    sample_flags,
)
from ant.core.errors import AntError
from ant.core.runtime import Runtime


def is_folder_target(out: str) -> bool:
    """Whether ``--out`` names a folder: it ends with a slash or is an existing directory."""
    return out.endswith(("/", os.sep)) or Path(out).is_dir()


@click.command("sample", context_settings=OVERRIDE_SETTINGS)
@click.argument("checkpoint", metavar="CKPT")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option(
    "--out",
    required=True,
    help="A .png file (one grid), or a folder, ending in / or existing (one PNG per sample).",
)
@click.option(
    "--num", "-n", type=int, help="Number of samples (-n under torchrun). [recipe: sample.num]"
)
@sample_flags
@click.option(
    "--class", "class_label", type=int, help="Draw only this class. [default: cycle classes]"
)
@click.option("--batch-size", type=int, help="Samples per forward pass. [default: 64]")
@click.option("--raw-weights", is_flag=True, help="Use the trained weights, not the EMA ones.")
@device_option
@click.option(
    "--npy", is_flag=True, help="Save raw float32 .npy arrays (latents stay undecoded), no PNG."
)
def sample_command(
    checkpoint: str,
    overrides: tuple[str, ...],
    out: str,
    class_label: int | None,
    batch_size: int | None,
    raw_weights: bool,
    device_choice: str,
    npy: bool,
    **flags: Any,
) -> None:
    """Draw samples from CKPT, a checkpoint file or a run directory (its latest checkpoint).

    Defaults come from the sample section of the checkpoint's recipe, changed by KEY=VALUE
    overrides of it (`sample.cfg_scale=1.5`); a flag given too wins over its key. A latent
    model's samples are decoded by the recipe's VAE (vae.name_or_path), except with --npy. A
    .png --out gets one grid (a .npy file of all samples with --npy); a folder --out gets
    sample-000000.png, ..., skipping files already there, so an interrupted run resumes. Under
    torchrun the ranks share a folder's samples; each sample's noise depends only on --seed and
    its index, so the files are those one process would write. Write -n, not --num, after
    `torchrun ... -m ant`: torchrun takes --num for an abbreviation of its own --numa-binding.
    """
    from ant.recipe.latent import recipe_vae
    from ant.sampling.arrays import save_array
    from ant.sampling.folder import sample_to_folder
    from ant.sampling.generate import BatchSampler
    from ant.sampling.images import check_image_channels, save_grid
    from ant.sampling.labels import class_labels
    from ant.sampling.loading import load_sampling_model
    from ant.sampling.model_info import ModelInfo
    from ant.sampling.settings import resolve_settings

    runtime = Runtime.from_env(device_choice)
    folder = is_folder_target(out)
    suffix = ".npy" if npy else ".png"
    if not folder and Path(out).suffix.lower() != suffix:
        raise AntError(
            f"--out {out}: give a {suffix} file (one grid) or a folder ending in / "
            "(one file per sample)"
        )
    if runtime.distributed and not folder:
        raise AntError("under torchrun, --out must be a folder ending in / (one file per sample)")
    keys = {**SAMPLE_KEYS, "num": "sample.num"}
    loaded = load_sampling_model(
        checkpoint, raw_weights=raw_weights, overrides=[*overrides, *flag_overrides(flags, keys)]
    )
    try:
        info = ModelInfo.of(loaded.model)
    except ValueError as exc:
        raise AntError(f"model '{loaded.recipe.model.name}' cannot be sampled: {exc}") from None
    device = runtime.device
    decoder = None if npy else recipe_vae(loaded.recipe, device)
    if not npy:
        check_image_channels(info.channels if decoder is None else decoder.out_channels)
    settings = resolve_settings(
        loaded.recipe.sample,
        timesteps=loaded.diffusion.num_timesteps,
        info=info,
        batch_size=batch_size,
        class_label=class_label,
    )
    draw = BatchSampler.from_settings(
        loaded.model.to(device), loaded.diffusion, settings, device, decoder
    )
    about = (
        f"{loaded.weights} weights of step {loaded.step}, {settings.sampler} "
        f"{settings.steps} steps, cfg {settings.cfg_scale:g}, seed {settings.seed}"
    )
    if folder:
        written, skipped = sample_to_folder(
            draw,
            Path(out),
            num=settings.num,
            seed=settings.seed,
            batch_size=settings.batch_size,
            class_label=settings.class_label,
            runtime=runtime,
            npy=npy,
            progress=runtime.rank == 0,
        )
        written, skipped = runtime.sum_over_ranks([written, skipped])
        if runtime.rank == 0:
            click.echo(f"wrote {written} samples to {out} ({skipped} already there; {about})")
        return
    samples = draw.sample_many(
        settings.num,
        labels=class_labels(range(settings.num), info.num_classes, settings.class_label),
        seed=settings.seed,
        batch_size=settings.batch_size,
        progress=True,
    )
    if npy:
        save_array(samples, Path(out))
    else:
        save_grid(samples, Path(out))
    click.echo(f"wrote {settings.num} samples to {out} ({about})")
