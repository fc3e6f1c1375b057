"""``ant train RECIPE [KEY=VALUE ...]``."""

from __future__ import annotations

from pathlib import Path

import click

from ant.cli.options import OVERRIDE_SETTINGS, device_option
from ant.recipe import load_recipe


@click.command("train", context_settings=OVERRIDE_SETTINGS)
@click.argument("recipe")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--run-dir", type=click.Path(path_type=Path), help="Default: runs/<recipe name>.")
@click.option("--resume", is_flag=True, help="Continue from the run's latest checkpoint.")
@device_option
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to the run).")
def train_command(
    recipe: str,
    overrides: tuple[str, ...],
    run_dir: Path | None,
    resume: bool,
    device_choice: str,
    no_progress: bool,
) -> None:
    """Train a diffusion model from RECIPE, with KEY=VALUE overrides.

    One process: `ant train RECIPE`. Many: `torchrun --nproc_per_node N -m ant train RECIPE`
    (multi-node by torchrun's own options). SIGTERM or Ctrl-C saves a checkpoint after the
    current step; `--resume` continues from it.
    """
    from ant.training.loop import Evaluation, train

    resolved = load_recipe(recipe, overrides)
    on_eval: Evaluation | None = None
    if resolved.eval.every:
        # Imported only here: torch-fidelity (and torchvision) take seconds to import, which a
        # run without evaluations should not pay.
        from ant.evaluation.training import TrainingEvaluation

        on_eval = TrainingEvaluation(resolved)
    out = train(
        resolved,
        run_dir,
        resume=resume,
        device=device_choice,
        show=not no_progress,
        on_eval=on_eval,
    )
    click.echo(f"run directory: {out}")
