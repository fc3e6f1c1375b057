"""Pre-flight checks: everything ``ant train`` refuses, found before any weight is built.

``ant train`` and ``ant recipe validate`` run the same :func:`preflight` on the cheap parts of
a run (the clusters, the method): how they fit the batch, the world size and the data (the
model's channels, input size and classes against the shards' meta.json).
``validate`` has no world size and may lack the data or the VAE; it checks one process and
names what it could not check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ant.core.errors import AntError
from ant.data.meta import DatasetMeta
from ant.data.shards import resolve_shards
from ant.methods import GradientMethod, Method, TimestepWeighting
from ant.recipe import Recipe


@dataclass
class Preflight:
    """What the checks decided: the timestep sampling, the interval of
    ``train.timestep_range``, and notes on what could not be checked."""

    sampling: str
    timestep_range: tuple[int, int] | None
    notes: list[str] = field(default_factory=list)


def check_stratified_batch(local_batch: int, k: int) -> None:
    """Stratified sampling needs the local batch to split into k equal chunks."""
    if local_batch % k != 0:
        raise AntError(
            f"stratified timestep sampling needs the per-rank batch ({local_batch}) to be "
            f"divisible by clustering.k ({k}): change train.global_batch_size or clustering.k"
        )


def check_proportional_batch(micro_batch: int, k: int) -> None:
    """Proportional sampling gives every cluster at least one sample of each micro-batch."""
    if micro_batch < k:
        raise AntError(
            f"proportional timestep sampling needs at least one sample per cluster in every "
            f"micro-batch, but a micro-batch has {micro_batch} samples for clustering.k={k}: "
            "raise train.global_batch_size, or lower train.grad_accum or clustering.k"
        )


def check_sizes(recipe: Recipe, world_size: int) -> None:
    """The batch splits over the ranks and every cluster has a timestep."""
    train = recipe.train
    if train.global_batch_size % world_size != 0:
        raise AntError(
            f"train.global_batch_size ({train.global_batch_size}) must be divisible by "
            f"the number of ranks ({world_size})"
        )
    if recipe.clustering.k > recipe.diffusion.timesteps:
        raise AntError(
            f"clustering.k ({recipe.clustering.k}) is more than diffusion.timesteps "
            f"({recipe.diffusion.timesteps}): every cluster needs at least one timestep"
        )
    check_sample_section(recipe)


def check_sample_section(recipe: Recipe) -> None:
    """What the sample grids and evaluations of training would refuse after hours of training:
    guidance without a conditional model, or without the null label class dropout trains."""
    scale, model = recipe.sample.cfg_scale, recipe.model
    if scale != 1.0 and model.num_classes == 0:
        raise AntError(
            f"sample.cfg_scale is {scale:g} but model.num_classes is 0: classifier-free "
            "guidance needs a class-conditional model; set sample.cfg_scale=1"
        )
    if scale != 1.0 and model.class_dropout == 0:
        raise AntError(
            f"sample.cfg_scale is {scale:g} but model.class_dropout is 0, so the model learns "
            "no null label to guide with; set model.class_dropout=0.1 or sample.cfg_scale=1"
        )


def preflight(
    recipe: Recipe,
    world_size: int | None,
    k: int,
    method: Method,
    weighting: TimestepWeighting | None,
) -> Preflight:
    """Raise a one-line :class:`AntError` for the first thing ``ant train`` would refuse in the
    parts of a step, after :func:`check_sizes` (the data: :func:`check_data`).

    ``world_size`` None checks one process and notes the conditions that depend on it.
    """
    train = recipe.train
    sampling = timestep_sampling(recipe, method)
    local = train.global_batch_size // (world_size or 1)
    if sampling == "stratified":
        check_stratified_batch(local, k)
    check_grad_accum(recipe, local, k, sampling)
    if sampling == "proportional":
        check_proportional_batch(local // train.grad_accum, k)
    check_task_grads(recipe, method, weighting, sampling)
    span = checked_timestep_range(recipe, sampling)
    notes = []
    if world_size is None:
        unit = k * train.grad_accum if sampling == "stratified" else train.grad_accum
        notes.append(
            "checked for one process; with N ranks, train.global_batch_size / N must be a "
            f"whole number divisible by {unit}"
        )
    return Preflight(sampling, span, notes)


def timestep_sampling(recipe: Recipe, method: Method) -> str:
    """``uniform`` for methods that ask for it (vanilla), else ``clustering.sampling``."""
    return "uniform" if method.timestep_sampling == "uniform" else recipe.clustering.sampling


def uses_task_grads(recipe: Recipe, method: Method) -> bool:
    """Whether some steps need per-cluster gradients: gradient methods, conflict monitoring, and
    gradient accumulation of a method that is not affine in the losses."""
    train = recipe.train
    return (
        isinstance(method, GradientMethod)
        or train.conflict_every is not None
        or (train.grad_accum > 1 and not method.linear_in_losses)
    )


def check_task_grads(
    recipe: Recipe, method: Method, weighting: TimestepWeighting | None, sampling: str
) -> None:
    if not uses_task_grads(recipe, method):
        return
    if recipe.train.task_grads == "vmap":
        if sampling != "stratified":
            raise AntError(
                f"method '{recipe.method.name}' with train.task_grads=vmap needs stratified "
                "timestep sampling (k equal batch chunks): set clustering.sampling="
                "stratified, or train.task_grads=grouped"
            )
        if recipe.train.compile and isinstance(method, GradientMethod):
            raise AntError(
                "train.compile does not apply to the vmap per-cluster gradients of method "
                f"'{recipe.method.name}': set train.compile=false or train.task_grads=grouped"
            )
    if weighting is not None and any(True for _ in weighting.parameters()):
        raise AntError(
            f"weighting '{recipe.weighting.name}' learns its weights by back-propagation, which "
            "per-cluster gradient steps bypass: unset train.conflict_every (or use "
            "train.grad_accum=1 with this method)"
        )


def check_grad_accum(recipe: Recipe, local_batch: int, k: int, sampling: str) -> None:
    parts = recipe.train.grad_accum
    unit = local_batch // k if sampling == "stratified" else local_batch
    if unit % parts:
        what = f"each cluster's share ({unit})" if sampling == "stratified" else "it"
        raise AntError(
            f"train.grad_accum={parts} must divide the per-rank batch ({local_batch}) so that "
            f"every micro-batch is stratified like it: {what} is not divisible by {parts}; "
            "change train.global_batch_size or train.grad_accum"
        )


def checked_timestep_range(recipe: Recipe, sampling: str) -> tuple[int, int] | None:
    span = recipe.train.timestep_range
    if span is None:
        return None
    low, high = span
    if not 0 <= low <= high < recipe.diffusion.timesteps:
        raise AntError(
            f"train.timestep_range {list(span)} must satisfy 0 <= a <= b < diffusion.timesteps "
            f"({recipe.diffusion.timesteps})"
        )
    if sampling != "uniform":
        raise AntError(
            "train.timestep_range trains one interval-specific model: use it with "
            f"method.name=vanilla (or a timestep weighting), not '{recipe.method.name}'"
        )
    return low, high


def check_data(recipe: Recipe, *, training: bool = True) -> list[str]:
    """Raise a one-line :class:`AntError` if the training data do not fit the recipe's model;
    returns notes on what could not be checked. ``training`` False (``validate``) notes
    missing data instead of refusing it."""
    shards = recipe.data.shards
    if shards is None:
        if training:
            raise AntError(
                "data.shards is not set: pack data first (`ant data pack digits data/digits`) "
                "and pass data.shards=data/digits"
            )
        return ["data.shards is not set: ant train needs it"]
    if not recipe.data.resampled:
        raise AntError(
            "training streams resampled shards so every rank runs the same number of steps: "
            "set data.resampled=true (non-resampled loading is for one exact pass)"
        )
    try:
        meta = resolve_shards(shards).meta
    except AntError as exc:
        if training:
            raise
        return [f"data not checked ({exc})"]
    if meta is None:
        return [f"data not checked against the model: {shards} has no meta.json"]
    check_model_fits_data(recipe, meta)
    if recipe.vae.name_or_path is not None and not training:
        return ["the VAE was not loaded: ant train checks the latent shapes through it"]
    return []


def check_model_fits_data(recipe: Recipe, meta: DatasetMeta) -> None:
    """The model takes the samples of ``meta`` (pixel space: channels and size; any space: the
    classes). Latent shapes are checked through the VAE by :mod:`ant.recipe.latent`."""
    model, shards = recipe.model, recipe.data.shards
    if recipe.vae.name_or_path is None:
        height, width, channels = meta.shape
        if channels != model.in_channels:
            raise AntError(
                f"data.shards {shards} hold {channels}-channel samples but model.in_channels is "
                f"{model.in_channels}: set model.in_channels={channels}"
            )
        if (height, width) != (model.input_size, model.input_size):
            fix = (
                f"set model.input_size={height}"
                if height == width
                else "re-pack the data square (ant data pack --image-size)"
            )
            raise AntError(
                f"data.shards {shards} hold {height}x{width} samples but model.input_size is "
                f"{model.input_size}: {fix}"
            )
    if model.num_classes == 0:
        return
    if not meta.labelled:
        raise AntError(
            f"data.shards {shards} are unlabelled but model.num_classes is {model.num_classes}: "
            "set model.num_classes=0 for an unconditional model"
        )
    if meta.num_classes > model.num_classes:
        raise AntError(
            f"data.shards {shards} have {meta.num_classes} classes but model.num_classes is "
            f"{model.num_classes}: set model.num_classes={meta.num_classes}"
        )
