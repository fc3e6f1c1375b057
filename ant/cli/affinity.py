"""``ant analyze affinity``: the task-affinity matrix of timestep groups (paper Fig. 1)."""

from __future__ import annotations

from pathlib import Path

import click

from ant.cli.options import device_option
from ant.experiments.affinity_run import AffinitySettings, compute_affinity, write_outputs

DEFAULTS = AffinitySettings(checkpoints=(), data="")


@click.command("affinity")
@click.argument("checkpoints", metavar="CKPT [CKPT ...]", nargs=-1, required=True)
@click.option("--data", required=True, help="Shards of real samples (an `ant data pack` folder).")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for affinity.npy, affinity.json and the heatmaps.",
)
@click.option(
    "--groups",
    "-g",
    type=int,
    default=DEFAULTS.groups,
    show_default=True,
    help="G contiguous timestep groups; G must divide T.",
)
@click.option(
    "--samples",
    "-n",
    type=int,
    default=DEFAULTS.samples,
    show_default=True,
    help="Real samples each group gradient averages over.",
)
@click.option(
    "--batch",
    "batch_size",
    type=int,
    default=DEFAULTS.batch_size,
    show_default=True,
    help="Samples per pass (activations of batch x group-block samples).",
)
@click.option(
    "--group-block",
    type=int,
    default=DEFAULTS.group_block,
    show_default=True,
    help="Groups per vmap pass (gradient memory: group-block x parameters floats).",
)
@click.option(
    "--sketch-dim",
    type=int,
    default=DEFAULTS.sketch_dim,
    show_default=True,
    help="Dimension D of the count sketch of each group gradient.",
)
@click.option("--exact", is_flag=True, help="Keep the G full gradients instead of sketches.")
@click.option(
    "--max-memory",
    "max_memory_gib",
    type=float,
    default=DEFAULTS.max_memory_gib,
    show_default=True,
    metavar="GIB",
    help="Budget for the G full gradients of --exact, in GiB.",
)
@click.option("--raw-weights", is_flag=True, help="Use the trained weights, not the EMA ones.")
@click.option(
    "--train-mode", is_flag=True, help="Keep the model in training mode (label dropout on)."
)
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@device_option
def affinity_command(
    checkpoints: tuple[str, ...],
    data: str,
    out: Path,
    groups: int,
    samples: int,
    batch_size: int,
    group_block: int,
    sketch_dim: int,
    exact: bool,
    max_memory_gib: float,
    raw_weights: bool,
    train_mode: bool,
    seed: int,
    device_choice: str,
) -> None:
    """Task affinity between timestep groups (Go et al. 2023, Fig. 1).

    A[i, j] is the cosine similarity of the training-loss gradients of groups i and j, each the
    mean over --samples real samples (every sample gets, per group, a timestep drawn inside the
    group and its own seeded noise), averaged over the checkpoints CKPT (files or run
    directories: their latest checkpoint). By default the EMA weights in eval mode (no label
    dropout), and each gradient is reduced to a seeded D-dimensional count sketch, so memory
    stays bounded; --exact computes the exact Gram matrix. affinity.npy is a G x G matrix for
    `clustering.objective=gradient clustering.affinity=DIR/affinity.npy`.
    """
    settings = AffinitySettings(
        checkpoints=checkpoints,
        data=data,
        groups=groups,
        samples=samples,
        batch_size=batch_size,
        group_block=group_block,
        sketch_dim=sketch_dim,
        exact=exact,
        max_memory_gib=max_memory_gib,
        raw_weights=raw_weights,
        train_mode=train_mode,
        seed=seed,
        device=device_choice,
    )
    result = compute_affinity(settings, log=lambda line: click.echo(line, err=True))
    paths = write_outputs(result, out)
    meta = result.metadata
    estimate = f"sketch D={meta['sketch_dim']}" if meta["estimate"] == "sketch" else "exact"
    rho = meta["spearman_gap"]
    click.echo(
        f"task affinity of {meta['groups']} groups x {meta['group_width']} timesteps over "
        f"{meta['samples']} samples, {len(meta['checkpoints'])} checkpoint(s), {estimate}: "
        f"Spearman(gap, affinity) = {'undefined' if rho is None else f'{rho:+.3f}'}"
    )
    click.echo(
        f"wrote {', '.join(str(p) for p in paths)} ({meta['seconds']:.1f} s); use it with "
        f"clustering.objective=gradient clustering.affinity={paths[0]}"
    )
