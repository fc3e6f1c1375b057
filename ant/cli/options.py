"""The flags several commands share, each defined once; most stand for a recipe key.

A flag that stands for a key (``--cfg-scale`` for ``sample.cfg_scale``) is turned into the
``KEY=VALUE`` override it abbreviates by :func:`flag_overrides` and goes through the recipe
loader after the command's own ``KEY=VALUE`` arguments: the same parsing, checks, provenance
and one-line errors, and a flag given with its key wins.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from ant.core.runtime import DEVICES

F = TypeVar("F", bound=Callable[..., Any])

OVERRIDE_SETTINGS = {"ignore_unknown_options": True}
"""Click settings of a command taking ``KEY=VALUE`` recipe overrides after its arguments."""

SAMPLERS = ("ddpm", "ddim")
"""The choices of ``--sampler``: those of the recipe's ``sample.sampler`` (a test keeps them
equal), named here so that ``--help`` needs no recipe schema."""

# Click parameter name -> the recipe key the flag stands for.
SAMPLE_KEYS: dict[str, str] = {
    "sampler": "sample.sampler",
    "steps": "sample.steps",
    "eta": "sample.eta",
    "cfg_scale": "sample.cfg_scale",
    "seed": "sample.seed",
    "clip_x0": "sample.clip_x0",
}
EVAL_KEYS: dict[str, str] = {
    "ref": "eval.ref",
    "num_samples": "eval.num_samples",
    "batch_size": "eval.batch_size",
}
FLAG_KEYS: dict[str, str] = {**SAMPLE_KEYS, **EVAL_KEYS, "metrics": "eval.metrics"}


def _stack(*options: Callable[[F], F]) -> Callable[[F], F]:
    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


sample_flags = _stack(
    click.option("--sampler", type=click.Choice(SAMPLERS), help="[recipe: sample.sampler]"),
    click.option("--steps", type=int, help="Sampler steps, respaced. [recipe: sample.steps]"),
    click.option("--eta", type=float, help="DDIM stochasticity. [recipe: sample.eta]"),
    click.option(
        "--cfg-scale",
        type=float,
        help="Classifier-free guidance, 1 = off. [recipe: sample.cfg_scale]",
    ),
    click.option("--seed", type=int, help="[recipe: sample.seed]"),
    click.option(
        "--clip-x0/--no-clip-x0",
        default=None,
        help="Clip predicted x0 to [-1, 1]. [recipe: sample.clip_x0]",
    ),
)
"""``--sampler --steps --eta --cfg-scale --seed --clip-x0``: the recipe's ``sample`` section."""

eval_flags = _stack(
    click.option(
        "--ref",
        help="Shards, an image folder, an ADM .npz batch or reference statistics. "
        "[recipe: eval.ref, else data.shards]",
    ),
    click.option("--num-samples", "-n", type=int, help="[recipe: eval.num_samples]"),
    click.option(
        "--batch-size",
        type=int,
        help="Samples and images a forward pass. [recipe: eval.batch_size]",
    ),
)
"""``--ref -n --batch-size``: keys of the recipe's ``eval`` section."""

device_option = click.option(
    "--device",
    "device_choice",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="cuda is this process's GPU (LOCAL_RANK % device count under torchrun).",
)
no_progress_option = click.option("--no-progress", is_flag=True, help="No progress bars.")


def flag_overrides(given: Mapping[str, Any], keys: Mapping[str, str] = FLAG_KEYS) -> list[str]:
    """The ``KEY=VALUE`` overrides the given flags stand for (a flag left out is ``None``).

    Values are written as JSON, which the loader reads as YAML: ``--cfg-scale 1.5`` becomes
    ``sample.cfg_scale=1.5``, ``--no-clip-x0`` ``sample.clip_x0=false``.
    """
    return [
        f"{keys[name]}={json.dumps(value)}"
        for name, value in given.items()
        if name in keys and value is not None
    ]
