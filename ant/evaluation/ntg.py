"""Negative transfer gap (Go et al. 2023): does an interval-specific model beat the shared one?

For a timestep interval I = [a, b] (0-indexed, inclusive) and a model trained only on I
(``train.timestep_range: [a, b]``), the composed denoiser uses the I-specific model on timesteps
in I and the shared model everywhere else. With P a metric where lower is better (FID, or FD on
another extractor),

    NTG(I) = P(composed on I) - P(shared model everywhere).

NTG < 0 means negative transfer: the task-specific learner does better on I than the multi-task
(shared) learner, so sharing hurt those tasks. NTG > 0 means the shared model benefits from
training on the other timesteps. Every composition draws the same samples (same seed, so the
same noise per sample) as the shared model, which makes the differences paired.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from ant.clustering.intervals import Interval
from ant.core.checkpoint import CHECKPOINT_DIR
from ant.core.errors import AntError
from ant.core.runtime import Runtime
from ant.evaluation.cache import file_digest, write_json
from ant.evaluation.evaluator import Evaluator, parse_weights, split_spec
from ant.evaluation.plot import plot_ntg
from ant.evaluation.run import (
    check_images,
    default_reference,
    resolve_checkpoint,
    settings_name,
)
from ant.evaluation.samples import SampleRequest, draw_to_folder, folder_images, folder_labels
from ant.recipe.latent import recipe_vae
from ant.sampling.generate import BatchSampler
from ant.sampling.loading import SamplingModel, load_sampling_model
from ant.sampling.model_info import ModelInfo
from ant.sampling.settings import SampleSettings, resolve_settings

_INTERVAL = re.compile(r"^(\d+):(\d+)$")


def parse_specific(value: str) -> tuple[str, Interval | None]:
    """``CKPT@a:b`` -> (CKPT, [a, b]); a bare ``CKPT`` -> (CKPT, None)."""
    path, sep, span = value.rpartition("@")
    if not sep:
        return value, None
    match = _INTERVAL.match(span)
    if match is None:
        raise AntError(f"--specific {value}: write CKPT@a:b with integers a <= b, e.g. run@0:199")
    return path, Interval(int(match.group(1)), int(match.group(2)))


class TimestepRouter(nn.Module):
    """A denoiser that sends each sample to the model of its timestep.

    ``experts`` are (interval, model) pairs with disjoint intervals; samples whose timestep lies
    in no interval go to ``shared``. A batch may mix timesteps: each model gets the samples of
    its timesteps (selected by masks) and the outputs are put back in batch order. The router
    carries the shared model's :class:`~ant.models.denoiser.Denoiser` attributes, so samplers
    treat it like that model.
    """

    def __init__(self, shared: nn.Module, experts: Sequence[tuple[Interval, nn.Module]]) -> None:
        super().__init__()
        ordered = sorted(experts, key=lambda pair: pair[0].low)
        for (first, _), (second, _) in itertools.pairwise(ordered):
            if second.low <= first.high:
                raise AntError(f"intervals {first} and {second} overlap: give disjoint intervals")
        self.shared = shared
        self.intervals = [interval for interval, _ in experts]
        self.experts = nn.ModuleList(model for _, model in experts)
        for name in ("in_channels", "out_channels", "input_size", "num_classes", "learn_sigma"):
            setattr(self, name, getattr(shared, name, None))
        self._null_label: int | None = getattr(shared, "null_label", None)

    @property
    def null_label(self) -> int | None:
        """The shared model's null label."""
        return self._null_label

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The output of the responsible model for every sample, ``[B, ...]``."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        masks = [interval.mask(t) for interval in self.intervals]
        elsewhere = torch.ones_like(t, dtype=torch.bool)
        for mask in masks:
            elsewhere &= ~mask
        out: torch.Tensor | None = None
        for mask, model in [(elsewhere, self.shared), *zip(masks, self.experts, strict=True)]:
            index = mask.nonzero().squeeze(1)
            if index.numel() == 0:
                continue
            extra = () if y is None else (y[index],)
            result = model(x[index], t[index], *extra)
            if out is None:
                out = result.new_empty((x.shape[0], *result.shape[1:]))
            out[index] = result
        assert out is not None
        return out


@dataclass(frozen=True)
class Gap:
    """One interval's result."""

    interval: Interval
    checkpoint: str
    composed: float
    gap: float

    @property
    def negative_transfer(self) -> bool:
        """NTG < 0: the interval-specific model did better."""
        return self.gap < 0


def negative_transfer_gaps(
    shared: float, composed: Sequence[tuple[Interval, str, float]]
) -> list[Gap]:
    """NTG(I) = P(composed on I) - P(shared) for each (interval, checkpoint, P(composed))."""
    return [
        Gap(interval, checkpoint, value, value - shared) for interval, checkpoint, value in composed
    ]


@dataclass(frozen=True)
class NTGOptions:
    """The options of ``ant analyze ntg`` that are not recipe keys; ``None`` takes the shared
    recipe's value. The sample and eval settings come from that recipe and ``overrides``."""

    shared: str
    specific: tuple[str, ...]
    feature_extractor: str | None = None
    weights: tuple[str, ...] = ()
    out: Path | None = None
    device: str = "auto"
    progress: bool = True
    overrides: tuple[str, ...] = ()
    """``KEY=VALUE`` on the shared checkpoint recipe's ``sample`` and ``eval`` sections."""


@dataclass(frozen=True)
class NTGReport:
    """What ``ant analyze ntg`` measured and where it wrote it."""

    metric: str
    shared: float
    gaps: list[Gap]
    json_path: Path
    plot_path: Path


def _check_same(shared: SamplingModel, other: SamplingModel, where: str) -> None:
    if other.recipe.diffusion != shared.recipe.diffusion:
        raise AntError(
            f"{where}: its diffusion settings differ from the shared model's; both must use "
            "the same diffusion section"
        )
    if ModelInfo.of(other.model) != ModelInfo.of(shared.model):
        raise AntError(
            f"{where}: its input shape, classes or null label differ from the shared model's"
        )


def _load_specific(value: str, shared: SamplingModel) -> tuple[Interval, Path, SamplingModel]:
    spec, interval = parse_specific(value)
    path = resolve_checkpoint(spec)
    loaded = load_sampling_model(path)
    _check_same(shared, loaded, f"--specific {value}")
    if interval is None:
        span = loaded.recipe.train.timestep_range
        if span is None:
            raise AntError(
                f"--specific {value}: its recipe has no train.timestep_range; write CKPT@a:b"
            )
        interval = Interval(*span)
    interval.check(shared.diffusion.num_timesteps, f"--specific {value}")
    return interval, path, loaded


def default_out(shared: Path, settings: SampleSettings) -> Path:
    """``RUN/ntg/<settings>`` beside the shared model's run."""
    parent = shared.parent
    run = parent.parent if parent.name == CHECKPOINT_DIR else parent
    return run / "ntg" / f"{shared.stem}-{settings_name(settings)}"


def run_ntg(options: NTGOptions) -> NTGReport | None:
    """Sample the shared model and every composition, measure them, write ntg.json and ntg.png.

    Under torchrun the ranks share the samples and rank 0 measures; other ranks return ``None``.
    """
    start = time.perf_counter()
    if not options.specific:
        raise AntError("give at least one --specific CKPT@a:b")
    runtime = Runtime.from_env(options.device)
    shared_path = resolve_checkpoint(options.shared)
    shared = load_sampling_model(shared_path, overrides=options.overrides)
    info = ModelInfo.of(shared.model)
    device = runtime.device
    decoder = recipe_vae(shared.recipe, device)
    check_images(info, decoder)
    specifics = [_load_specific(value, shared) for value in options.specific]
    recipe = shared.recipe
    settings = resolve_settings(
        recipe.sample,
        timesteps=shared.diffusion.num_timesteps,
        info=info,
        num=recipe.eval.num_samples,
        batch_size=recipe.eval.batch_size,
    )
    extractor = options.feature_extractor or recipe.eval.feature_extractor
    evaluator = None
    if runtime.rank == 0:
        evaluator = Evaluator(
            metrics=["fd"],
            feature_extractor=extractor,
            reference=default_reference(recipe),
            weights=parse_weights(options.weights, split_spec(extractor)[0]),
            num_classes=info.num_classes,
            device=device,
            batch_size=settings.batch_size,
            progress=options.progress,
        )
    out = options.out or default_out(shared_path, settings)
    shared_id = f"{shared_path.name} sha256:{file_digest(shared_path)[:16]}"
    runs: list[tuple[str, str, nn.Module]] = [("shared", shared_id, shared.model)]
    for interval, path, loaded in specifics:
        router = TimestepRouter(shared.model, [(interval, loaded.model)])
        description = (
            f"{path.name} sha256:{file_digest(path)[:16]} on {interval}, {shared_id} elsewhere"
        )
        runs.append((f"{path.stem}-{interval.name}", description, router))
    for name, description, model in runs:
        request = SampleRequest.of(
            description,
            settings,
            info.num_classes,
        )
        draw = BatchSampler.from_settings(
            model.to(device), shared.diffusion, settings, device, decoder
        )
        draw_to_folder(
            draw,
            out / "samples" / name,
            request,
            num=settings.num,
            batch_size=settings.batch_size,
            runtime=runtime,
            progress=options.progress,
        )
    if evaluator is None:
        return None
    measured: dict[str, dict[str, float]] = {}
    for name, _, _ in runs:
        folder = out / "samples" / name
        result = evaluator.evaluate(
            folder_images(folder, settings.num), folder_labels(folder, settings.num)
        )
        measured[name] = result.metrics
    values = {name: metrics[evaluator.frechet_key] for name, metrics in measured.items()}
    gaps = negative_transfer_gaps(
        values["shared"],
        [
            (interval, str(path), values[name])
            for (interval, path, _), (name, _, _) in zip(specifics, runs[1:], strict=True)
        ],
    )
    metric = evaluator.frechet_key
    report = {
        "format": "ant-ntg/1",
        "metric": metric,
        "definition": f"NTG(I) = {metric}(composed on I) - {metric}(shared); < 0: negative "
        "transfer",
        "shared": {
            "checkpoint": str(shared_path),
            metric: values["shared"],
            "metrics": measured["shared"],
        },
        "intervals": [
            {
                "interval": [gap.interval.low, gap.interval.high],
                "checkpoint": gap.checkpoint,
                metric: gap.composed,
                "ntg": gap.gap,
                "negative_transfer": gap.negative_transfer,
                "metrics": measured[name],
            }
            for gap, (name, _, _) in zip(gaps, runs[1:], strict=True)
        ],
        "sampling": {
            "sampler": settings.sampler,
            "steps": settings.steps,
            "eta": settings.eta,
            "cfg_scale": settings.cfg_scale,
            "seed": settings.seed,
            "clip_x0": settings.clip_x0,
            "num_samples": settings.num,
        },
        "feature_extractor": extractor,
        "extractors": evaluator.extractor_info(),
        "reference": evaluator.reference_info(),
        "seconds": round(time.perf_counter() - start, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    json_path = write_json(out / "ntg.json", report)
    plot_path = plot_ntg(
        [str(g.interval) for g in gaps], [g.gap for g in gaps], metric, out / "ntg.png"
    )
    return NTGReport(metric, values["shared"], gaps, json_path, plot_path)
