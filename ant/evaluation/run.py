"""``ant eval`` without the command line: sample a checkpoint into a folder, then measure it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ant.core.checkpoint import CHECKPOINT_DIR, latest_checkpoint
from ant.core.errors import AntError
from ant.core.runtime import Runtime
from ant.evaluation.cache import file_digest
from ant.evaluation.evaluator import Evaluator, parse_weights, split_spec
from ant.evaluation.report import EvalReport, SamplingInfo
from ant.evaluation.samples import (
    SampleRequest,
    draw_to_folder,
    export_adm_npz,
    folder_images,
    folder_labels,
)
from ant.recipe import Recipe
from ant.recipe.latent import image_reference, recipe_vae
from ant.sampling.generate import BatchSampler, SampleDecoder
from ant.sampling.loading import load_sampling_model
from ant.sampling.model_info import ModelInfo
from ant.sampling.settings import SampleSettings, resolve_settings

LATEST_NAME = "latest.pt"
EVAL_DIR = "eval"
IMAGE_CHANNELS = (1, 3)


@dataclass(frozen=True)
class EvalOptions:
    """The options of ``ant eval`` that are not recipe keys; ``None`` takes the checkpoint
    recipe's value. The sample and eval settings come from the recipe and its ``overrides``."""

    checkpoint: str
    feature_extractor: str | None = None
    weights: tuple[str, ...] = ()
    samples_dir: Path | None = None
    out: Path | None = None
    npz: Path | None = None
    raw_weights: bool = False
    device: str = "auto"
    progress: bool = True
    overrides: tuple[str, ...] = ()
    """``KEY=VALUE`` on the checkpoint recipe's ``sample`` and ``eval`` sections."""


def resolve_checkpoint(spec: str) -> Path:
    """A checkpoint file from a file, a run directory, or ``.../latest.pt`` (the newest one)."""
    path = Path(spec).expanduser()
    if path.is_dir() or (path.name == LATEST_NAME and not path.exists()):
        folder = path if path.is_dir() else path.parent
        found = latest_checkpoint(folder)
        if found is None:
            raise AntError(f"no checkpoint in {folder}: expected {CHECKPOINT_DIR}/step-*.pt there")
        return found
    if not path.is_file():
        raise AntError(f"checkpoint not found: {path}")
    return path


def settings_name(settings: SampleSettings, raw_weights: bool = False) -> str:
    """A folder name for samples of these settings, e.g. ``ddpm250-cfg1.5-seed0``."""
    name = f"{settings.sampler}{settings.steps}-cfg{settings.cfg_scale:g}-seed{settings.seed}"
    if settings.sampler == "ddim" and settings.eta:
        name += f"-eta{settings.eta:g}"
    if not settings.clip_x0:
        name += "-noclip"
    return name + ("-raw" if raw_weights else "")


def default_eval_dir(checkpoint: Path, settings: SampleSettings, raw_weights: bool) -> Path:
    """``RUN/eval/step-0000200-ddpm250-cfg1.5-seed0`` for ``RUN/checkpoints/step-0000200.pt``."""
    parent = checkpoint.parent
    run = parent.parent if parent.name == CHECKPOINT_DIR else parent
    return run / EVAL_DIR / f"{checkpoint.stem}-{settings_name(settings, raw_weights)}"


def check_images(info: ModelInfo, decoder: SampleDecoder | None = None) -> None:
    """Raise :class:`AntError` unless the model's samples (decoded by ``decoder``) are images."""
    channels = info.channels if decoder is None else decoder.image_shape(info.shape)[0]
    if channels not in IMAGE_CHANNELS:
        raise AntError(
            f"the model draws {channels}-channel latents, not images: name their VAE in the "
            "recipe (vae.name_or_path, docs/latent.md) so evaluation can decode them"
        )


def default_reference(recipe: Recipe) -> str | None:
    """``eval.ref``, else the training images (``data.shards``, or for latents encoded by
    ``ant data encode`` the image shards they came from)."""
    return recipe.eval.ref or image_reference(recipe)


def evaluate_checkpoint(options: EvalOptions) -> EvalReport | None:
    """Sample ``options.checkpoint`` into its samples folder and compute the metrics.

    Under torchrun every rank draws its share of the samples; rank 0 then computes the metrics
    and returns the report (written to ``out``), the other ranks return ``None``.
    """
    start = time.perf_counter()
    runtime = Runtime.from_env(options.device)
    path = resolve_checkpoint(options.checkpoint)
    loaded = load_sampling_model(path, raw_weights=options.raw_weights, overrides=options.overrides)
    recipe = loaded.recipe
    try:
        info = ModelInfo.of(loaded.model)
    except ValueError as exc:
        raise AntError(f"model '{recipe.model.name}' cannot be sampled: {exc}") from None
    device = runtime.device
    decoder = recipe_vae(recipe, device)
    check_images(info, decoder)
    section = recipe.eval
    settings = resolve_settings(
        recipe.sample,
        timesteps=loaded.diffusion.num_timesteps,
        info=info,
        num=section.num_samples,
        batch_size=section.batch_size,
    )
    extractor = options.feature_extractor or section.feature_extractor
    recipe_weights = (section.weights,) if section.weights else ()
    weights_values = options.weights or (recipe_weights if not options.feature_extractor else ())
    evaluator = None
    if runtime.rank == 0:
        evaluator = Evaluator(
            metrics=list(section.metrics),
            feature_extractor=extractor,
            reference=default_reference(recipe),
            weights=parse_weights(weights_values, split_spec(extractor)[0]),
            num_classes=info.num_classes,
            device=device,
            batch_size=settings.batch_size,
            progress=options.progress,
        )
    eval_dir = default_eval_dir(path, settings, options.raw_weights)
    folder = options.samples_dir or eval_dir / "samples"
    request = SampleRequest.of(
        f"{path.name} sha256:{file_digest(path)[:16]} step {loaded.step} {loaded.weights}",
        settings,
        info.num_classes,
    )
    draw = BatchSampler.from_settings(
        loaded.model.to(device), loaded.diffusion, settings, device, decoder
    )
    sampled = time.perf_counter()
    written, _ = draw_to_folder(
        draw,
        folder,
        request,
        num=settings.num,
        batch_size=settings.batch_size,
        runtime=runtime,
        progress=options.progress,
    )
    sampled = time.perf_counter() - sampled
    if evaluator is None:
        return None
    images = folder_images(folder, settings.num)
    labels = folder_labels(folder, settings.num)
    result = evaluator.evaluate(images, labels)
    if options.npz is not None:
        export_adm_npz(images, labels, options.npz)
    report = EvalReport(
        checkpoint=str(path),
        step=loaded.step,
        weights=loaded.weights,
        recipe=recipe.name,
        sampling=SamplingInfo.of(settings, folder, written),
        feature_extractor=extractor,
        extractors=result.extractors,
        reference=result.reference,
        metrics=result.metrics,
        npz=str(options.npz) if options.npz else None,
        seconds={
            "sampling": round(sampled, 3),
            "metrics": round(result.seconds, 3),
            "total": round(time.perf_counter() - start, 3),
        },
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    report.write(options.out or folder.parent / "metrics.json")
    return report
