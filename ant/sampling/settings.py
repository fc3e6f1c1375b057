"""The settings of one ``ant sample`` run: command-line values over the recipe's, checked."""

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
    sampler: SamplerName | None = None,
    steps: int | None = None,
    eta: float | None = None,
    cfg_scale: float | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    class_label: int | None = None,
    clip_x0: bool | None = None,
) -> SampleSettings:
    """Each given value, else the recipe's ``sample`` section; :class:`AntError` if one is bad.

    ``timesteps`` is the diffusion's T: an explicit ``steps`` must lie in 2..T, the recipe's is
    capped at T.
    """
    settings = SampleSettings(
        num=section.num if num is None else num,
        sampler=section.sampler if sampler is None else sampler,
        steps=min(section.steps, timesteps) if steps is None else steps,
        eta=section.eta if eta is None else eta,
        cfg_scale=section.cfg_scale if cfg_scale is None else cfg_scale,
        seed=section.seed if seed is None else seed,
        batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
        class_label=class_label,
        clip_x0=section.clip_x0 if clip_x0 is None else clip_x0,
    )
    _check(settings, timesteps, info)
    return settings


def _check(settings: SampleSettings, timesteps: int, info: ModelInfo) -> None:
    if settings.num < 1:
        raise AntError(f"--num must be at least 1, got {settings.num}")
    if settings.batch_size < 1:
        raise AntError(f"--batch-size must be at least 1, got {settings.batch_size}")
    if not MIN_STEPS <= settings.steps <= timesteps:
        raise AntError(
            f"--steps must lie in {MIN_STEPS}..{timesteps} (the diffusion's timesteps), "
            f"got {settings.steps}"
        )
    if settings.eta < 0:
        raise AntError(f"--eta must be >= 0, got {settings.eta}")
    if settings.cfg_scale < 0:
        raise AntError(f"--cfg-scale must be >= 0, got {settings.cfg_scale}")
    if settings.cfg_scale != 1.0 and not info.conditional:
        raise AntError(
            f"cfg scale {settings.cfg_scale} needs a class-conditional model; use --cfg-scale 1"
        )
    check_class_label(settings.class_label, info.num_classes)
