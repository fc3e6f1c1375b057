"""The settings of one sampling job: the recipe's ``sample`` section, resolved and checked."""

from __future__ import annotations

from dataclasses import dataclass

from ant.core.errors import AntError
from ant.diffusion.samplers import SamplerName
from ant.recipe.schema import SampleConfig
from ant.sampling.labels import check_class_label
from ant.sampling.model_info import ModelInfo

DEFAULT_BATCH_SIZE = 64
MIN_STEPS = 2


@dataclass(frozen=True)
class SampleSettings:
    """Resolved sampling settings (see ``ant sample --help`` for their meaning)."""

    num: int
    sampler: SamplerName
    steps: int
    eta: float
    cfg_scale: float
    seed: int
    batch_size: int
    class_label: int | None
    clip_x0: bool


def resolve_settings(
    section: SampleConfig,
    *,
    timesteps: int,
    info: ModelInfo,
    num: int | None = None,
    batch_size: int | None = None,
    class_label: int | None = None,
) -> SampleSettings:
    """The recipe's ``sample`` section (command-line flags reach it as overrides), with ``num``
    and ``batch_size`` where a command takes them from elsewhere; :class:`AntError` if a value
    is bad. ``timesteps`` is the diffusion's T: ``sample.steps`` is capped at T.
    """
    settings = SampleSettings(
        num=section.num if num is None else num,
        sampler=section.sampler,
        steps=min(section.steps, timesteps),
        eta=section.eta,
        cfg_scale=section.cfg_scale,
        seed=section.seed,
        batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
        class_label=class_label,
        clip_x0=section.clip_x0,
    )
    _check(settings, timesteps, info)
    return settings


def _check(settings: SampleSettings, timesteps: int, info: ModelInfo) -> None:
    # The recipe schema has checked the sample section; what remains depends on the model.
    if settings.num < 1:
        raise AntError(f"--num must be at least 1, got {settings.num}")
    if settings.batch_size < 1:
        raise AntError(f"--batch-size must be at least 1, got {settings.batch_size}")
    if settings.steps < MIN_STEPS:
        raise AntError(
            f"the diffusion has {timesteps} timesteps: sampling needs at least {MIN_STEPS}"
        )
    if settings.cfg_scale != 1.0 and not info.conditional:
        raise AntError(
            f"sample.cfg_scale {settings.cfg_scale} needs a class-conditional model; "
            "set sample.cfg_scale=1 (--cfg-scale 1)"
        )
    check_class_label(settings.class_label, info.num_classes)
