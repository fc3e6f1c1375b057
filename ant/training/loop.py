"""The training loop: a thin composition of the parts, with checkpoints, logs and resume."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ant.clustering import Clustering, Interval, write_clusters
from ant.core.checkpoint import (
    CHECKPOINT_FORMAT,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ant.core.errors import AntError, Preempted
from ant.core.logbook import Logbook, truncate_metrics
from ant.core.progress import TrainProgress
from ant.core.rundir import RunLock, clean_leftovers
from ant.core.runtime import TRAINING_TIMEOUT, Runtime
from ant.data.loader import ShardLoader, make_loader
from ant.diffusion import GaussianDiffusion
from ant.methods import Method, TimestepWeighting
from ant.models.weights import load_init_weights
from ant.recipe import Recipe, record_recipe
from ant.recipe.build import build_loggers, build_model, build_optimizer, plan_run
from ant.recipe.latent import training_encoder
from ant.recipe.preflight import check_data, uses_task_grads
from ant.training.ema import make_ema
from ant.training.grouped import GroupedGrads, describe_fallback
from ant.training.guard import NonFiniteGuard
from ant.training.lr_schedule import DECAYING, make_scheduler
from ant.training.rng import gather_rng_states, restore_rng_state
from ant.training.samples import write_sample_grid
from ant.training.signals import StopFlag, StopVote, stop_on_signals
from ant.training.step import StepOutput, TrainStep, unwrap
from ant.training.timesteps import ClusterTable

logger = logging.getLogger(__name__)


def default_run_dir(recipe: Recipe) -> Path:
    """``train.run_dir`` if set, else ``runs/<recipe name>``."""
    return Path(recipe.train.run_dir) if recipe.train.run_dir else Path("runs") / recipe.name


def _task_grads_mode(recipe: Recipe, model: nn.Module, sampling: str) -> str:
    """``train.task_grads``, or the fallback when grouped gradients do not cover the model."""
    mode = recipe.train.task_grads
    if mode != "grouped":
        return mode
    uncovered = GroupedGrads(model).uncovered
    if not uncovered:
        return mode
    fallback = "vmap" if sampling == "stratified" else "backward"
    logger.warning(describe_fallback(uncovered, fallback))
    return fallback


def build_train_step(recipe: Recipe, ctx: Runtime) -> tuple[TrainStep, Clustering]:
    """Every part of a training step on ``ctx.device``, and the timestep clustering.

    All ranks build the same initial weights (seeded by ``train.seed``), then reseed per rank so
    each draws its own timesteps and noise.
    """
    device = ctx.device
    torch.manual_seed(recipe.train.seed)
    plan = plan_run(recipe, ctx.world_size)
    if device.type == "cuda" and recipe.train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe).to(device)
    ema = make_ema(model)
    method, weighting = plan.method, plan.weighting
    method.to(device)
    parts: list[Method | TimestepWeighting] = [method]
    if weighting is not None:
        parts.append(weighting.to(device))
    torch.manual_seed(recipe.train.seed * 1_000_003 + ctx.rank)
    sampling = plan.checked.sampling
    task_grads = (
        _task_grads_mode(recipe, model, sampling)
        if uses_task_grads(recipe, method)
        else recipe.train.task_grads
    )
    optimizer = build_optimizer(recipe, model, parts, device)
    step = TrainStep(
        model=model,
        ema=ema,
        diffusion=plan.diffusion,
        method=method,
        clusters=ClusterTable.from_intervals(plan.clustering.intervals, device),
        optimizer=optimizer,
        ema_decay=recipe.train.ema_decay,
        precision=recipe.train.precision,
        grad_clip=recipe.optim.grad_clip,
        sampling=sampling,
        conditional=recipe.model.num_classes > 0,
        world_size=ctx.world_size,
        weighting=weighting,
        task_grads=task_grads,
        task_grads_dtype=recipe.train.task_grads_dtype,
        grad_accum=recipe.train.grad_accum,
        conflict_every=recipe.train.conflict_every,
        timestep_range=plan.checked.timestep_range,
        on_nonfinite=recipe.train.on_nonfinite,
        scheduler=_scheduler(recipe, optimizer),
    )
    return step, plan.clustering


def _scheduler(
    recipe: Recipe, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """The recipe's learning-rate schedule, or None for a constant rate without warmup."""
    optim = recipe.optim
    if optim.schedule == "constant" and optim.warmup_steps == 0:
        return None
    return make_scheduler(
        optimizer,
        optim.schedule,
        warmup=optim.warmup_steps,
        horizon=optim.decay_steps or recipe.train.steps,
        min_lr=optim.min_lr,
        scheduled_groups=len(optimizer.param_groups) if optim.schedule_method_params else 1,
    )


class Evaluation(Protocol):
    """What ``eval.every`` runs, handed to the loop by ``ant train``: the loop never imports the
    evaluation package (:class:`ant.evaluation.training.TrainingEvaluation` is the built-in)."""

    def prepare(self, ema: nn.Module, ctx: Runtime) -> None:
        """Build what evaluating needs before the first step, so a bad eval section fails fast."""

    def __call__(
        self, ema: nn.Module, diffusion: GaussianDiffusion, step: int, ctx: Runtime, show: bool
    ) -> dict[str, float]:
        """Metrics of the EMA model at ``step`` keyed ``eval/<name>``, on every rank."""
        ...


def _record(
    step: int,
    out: StepOutput,
    lr: float,
    ctx: Runtime,
    samples_per_s: float,
) -> dict[str, Any]:
    values = torch.cat(
        [out.loss.reshape(1).float(), out.objective.reshape(1).float(), out.cluster_loss.float()]
    )
    if ctx.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.AVG)
    host = values.tolist()
    record: dict[str, Any] = {
        "step": step,
        "loss": host[0],
        "objective": host[1],
        "cluster_loss": host[2:],
        "cluster_weight": out.cluster_weight.float().tolist(),
        "lr": lr,
        "samples_per_s": samples_per_s,
    }
    if out.grad_norm is not None:
        record["grad_norm"] = float(out.grad_norm)
    for key, value in out.extra.items():
        record[key] = value.float().tolist() if value.numel() > 1 else float(value)
    if out.conflict is not None:
        record |= conflict_record(out.conflict)
    return record


def conflict_record(cosines: torch.Tensor) -> dict[str, Any]:
    """The logged view of the per-cluster gradient cosines: the k x k matrix ``conflict`` and
    ``conflict_first_last``, the cosine of the lowest- and highest-noise clusters."""
    matrix = cosines.float().tolist()
    return {"conflict": matrix, "conflict_first_last": matrix[0][-1]}


def _batches(
    loader: ShardLoader[Any], skip: int
) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
    """Endless batches, epoch after epoch, starting ``skip`` batches into the current epoch."""
    while True:
        for index, batch in enumerate(loader):
            if index >= skip:
                yield batch
        skip = 0


def train(
    recipe: Recipe,
    run_dir: Path | None = None,
    *,
    resume: bool = False,
    device: str = "auto",
    show: bool = True,
    on_eval: Evaluation | None = None,
) -> Path:
    """Train ``recipe`` in ``run_dir`` (one process, or every rank under torchrun)."""
    ctx = Runtime.from_env(device)
    target = run_dir or default_run_dir(recipe)
    with ctx.process_group(timeout=TRAINING_TIMEOUT):
        fit(recipe, target, ctx, resume=resume, show=show, on_eval=on_eval)
    return target


def fit(
    recipe: Recipe,
    run_dir: Path,
    ctx: Runtime,
    *,
    resume: bool = False,
    show: bool = True,
    on_eval: Evaluation | None = None,
) -> TrainStep:
    """Train in ``run_dir`` within an initialised context; returns the trained parts.

    ``on_eval`` runs at every ``eval.every`` steps (required when it is set).

    Rank 0 holds the run directory's lock throughout (:mod:`ant.core.rundir`). Raises
    :class:`~ant.core.errors.Preempted` after saving when a signal stopped the run, and
    :class:`~ant.core.errors.Diverged` when it went non-finite (:mod:`ant.training.guard`).
    """
    with RunLock(run_dir) if ctx.is_main else contextlib.nullcontext():
        if ctx.is_main:
            clean_leftovers(run_dir)
        return _fit(recipe, run_dir, ctx, resume=resume, show=show, on_eval=on_eval)


def _fit(
    recipe: Recipe,
    run_dir: Path,
    ctx: Runtime,
    *,
    resume: bool,
    show: bool,
    on_eval: Evaluation | None,
) -> TrainStep:
    device = ctx.device
    if recipe.eval.every and on_eval is None:
        raise AntError(
            "eval.every is set but the trainer was given no evaluation: run `ant train`, or "
            "pass on_eval=TrainingEvaluation(recipe) to fit()"
        )
    latest = latest_checkpoint(run_dir)
    if latest is not None and not resume:
        raise AntError(
            f"{run_dir} already holds checkpoints: pass --resume to continue that run, "
            "or --run-dir for a new one"
        )
    check_data(recipe)
    step, clustering = build_train_step(recipe, ctx)
    if latest is None and recipe.model.init_from:
        summary = load_init_weights(
            recipe.model.init_from,
            step.model,
            step.ema,
            strict=recipe.model.init_strict,
            fmt=recipe.model.init_format,
        )
        if ctx.is_main:
            print(summary)
    encode = training_encoder(recipe, device)
    intervals = clustering.intervals
    model = step.model
    local_batch = recipe.train.global_batch_size // ctx.world_size

    start = 0
    if latest is not None:
        state = load_checkpoint(latest, map_location=device)
        _check_clusters(state, clustering.intervals, latest)
        _check_horizon(state, recipe, latest)
        start = _restore(state, step, ctx, latest)
    elif resume and ctx.is_main:
        print(f"no checkpoint in {run_dir}: starting a new run")

    if ctx.distributed:
        step.model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if recipe.train.compile:
        step.model = torch.compile(step.model)  # type: ignore[assignment]

    if ctx.is_main:
        record_recipe(recipe, run_dir, start)
        write_clusters(
            run_dir,
            clustering,
            sampling=step.sampling,
            timesteps=recipe.diffusion.timesteps,
            schedule=recipe.diffusion.schedule,
        )
        truncate_metrics(run_dir, start)
    ctx.barrier()

    loader = make_loader(
        recipe.data.shards or "",
        batch_size=local_batch,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=recipe.train.seed,
        resampled=True,
        epoch_samples=recipe.data.epoch_samples,
        shuffle_buffer=recipe.data.shuffle_buffer,
        hflip=recipe.data.hflip,
        num_workers=recipe.data.num_workers,
        skip_corrupt=recipe.data.skip_corrupt,
        num_classes=recipe.model.num_classes if step.conditional else None,
    )
    per_epoch = len(loader)
    loader.epoch = start // per_epoch
    batches = _batches(loader, start % per_epoch)

    eval_every = recipe.eval.every
    if on_eval is not None and eval_every:
        on_eval.prepare(step.ema, ctx)
    logbook = Logbook(build_loggers(recipe, run_dir, start) if ctx.is_main else [])
    train = recipe.train
    guard = NonFiniteGuard(train.on_nonfinite, train.nonfinite_patience, step.fp16, device)
    flag = StopFlag()
    vote = StopVote(flag, device, ctx.distributed)
    total = train.steps
    current = start
    stop = False
    progress = TrainProgress(total, start, enabled=show and ctx.is_main)
    # Closing the batches shuts the loader's workers down before the process exits, whatever
    # ends the loop (they ignore the stop signals and end with the trainer); the loggers are
    # closed likewise (a tracker's run is finished even when training raises).
    with (
        stop_on_signals(flag),
        progress as bar,
        contextlib.closing(batches),
        contextlib.closing(logbook),
    ):
        tick, tick_step = time.perf_counter(), current
        while current < total and not stop:
            x, y = next(batches)
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if encode is not None:
                x = encode(x)
            current += 1
            measure = current % train.log_every == 0 or current == total
            out = step(x, y, measure)
            guard.observe(current, out.finite)
            bar.advance()
            stop = vote()
            save = stop or current % train.ckpt_every == 0 or current == total
            grid = bool(train.sample_every) and current % (train.sample_every or 1) == 0
            evaluate = bool(eval_every) and current % (eval_every or 1) == 0
            writes = save or grid or evaluate
            # The guard is read on logging steps and before every write (then with the weights).
            report = (
                guard.check(current, _weights(step) if writes else [], run_dir, ctx.distributed)
                if measure or writes
                else None
            )
            if measure:
                now = time.perf_counter()
                rate = (current - tick_step) * train.global_batch_size / (now - tick)
                record = _record(current, out, step.lr, ctx, rate)
                tick, tick_step = now, current
                if report is not None and report.skipped:
                    record["skipped_steps"] = report.skipped
                logbook.log(record)
                bar.show_loss(record["loss"])
            elif out.conflict is not None:
                logbook.log({"step": current, **conflict_record(out.conflict)})
            if report is not None:
                report.raise_problem()
            if save:
                _save(step, recipe, intervals, current, run_dir, ctx)
            if grid:
                _grid(step.ema, recipe, run_dir, f"step-{current:07d}", ctx, logbook, current)
            if evaluate and on_eval is not None:
                values = on_eval(step.ema, step.diffusion, current, ctx, show)
                logbook.log({"step": current, **values})
        if current < total:
            name = signal.Signals(flag.signal).name if flag.signal else "a signal on another rank"
            raise Preempted(
                f"{name} after step {current}, whose checkpoint is saved; continue with --resume"
                if ctx.is_main
                else ""
            )
        _grid(step.ema, recipe, run_dir, "final", ctx, logbook, current)
    return step


def _weights(step: TrainStep) -> Iterator[torch.Tensor]:
    """Every tensor a checkpoint or a sample grid is made from."""
    yield from unwrap(step.model).parameters()
    yield from step.ema.parameters()
    yield from step.method.parameters()
    if step.weighting is not None:
        yield from step.weighting.parameters()


def _grid(
    ema: nn.Module,
    recipe: Recipe,
    run_dir: Path,
    name: str,
    ctx: Runtime,
    logbook: Logbook,
    current: int,
) -> None:
    if ctx.is_main:
        written = write_sample_grid(ema, recipe, run_dir / "samples" / f"{name}.png", ctx.device)
        if written.suffix == ".png":
            logbook.log_image(current, "samples", written)
    ctx.barrier()


def _save(
    step: TrainStep,
    recipe: Recipe,
    intervals: list[Interval],
    current: int,
    run_dir: Path,
    ctx: Runtime,
) -> None:
    rng = gather_rng_states(ctx)
    if ctx.is_main:
        state = {
            "format": CHECKPOINT_FORMAT,
            "recipe": recipe.model_dump(mode="json"),
            "step": current,
            "intervals": [list(i) for i in intervals],
            "model": unwrap(step.model).state_dict(),
            "ema": step.ema.state_dict(),
            "optimizer": step.optimizer.state_dict(),
            "method": step.method.state_dict(),
            "weighting": step.weighting.state_dict() if step.weighting is not None else None,
            "scaler": step.scaler.state_dict() if step.scaler is not None else None,
            "scheduler": step.scheduler.state_dict() if step.scheduler is not None else None,
            "rng": rng,
        }
        save_checkpoint(state, checkpoint_path(run_dir, current))
    ctx.barrier()


def _check_clusters(state: dict[str, Any], intervals: list[Interval], path: Path) -> None:
    """The recipe clusters the timesteps as the checkpoint's run did (the method's per-cluster
    state would otherwise resume on other clusters)."""
    saved = [tuple(int(v) for v in pair) for pair in state.get("intervals", [])]
    now = [tuple(pair) for pair in intervals]
    if saved != now:
        raise AntError(
            f"{path} was trained on the timestep clusters {saved}, this recipe gives {now} "
            "(a changed clustering section or affinity file): resume with the run's recipe.yaml, "
            "or start a new run with --run-dir"
        )


def _join_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, done: int) -> None:
    """Put the schedule at step ``done``. The rate is a pure function of the step and the
    recipe's base rates, so recomputing it equals the uninterrupted run bitwise, and a resume
    that adds or changes a schedule continues on the new curve (the checkpoint's copy of the
    scheduler state is a record)."""
    scheduler.last_epoch = done - 1
    with warnings.catch_warnings():
        # torch warns of a step before optimizer.step(); here no update is due.
        warnings.filterwarnings(
            "ignore", message="Detected call of `lr_scheduler.step", category=UserWarning
        )
        scheduler.step()


def _check_horizon(state: dict[str, Any], recipe: Recipe, path: Path) -> None:
    """A cosine or linear schedule decays over the horizon its run started with: a changed
    ``train.steps`` must not silently bend the curve mid-run."""
    optim = recipe.optim
    if optim.schedule not in DECAYING:
        return
    saved = state.get("recipe", {})
    before = saved.get("optim", {}).get("decay_steps") or saved.get("train", {}).get("steps")
    now = optim.decay_steps or recipe.train.steps
    if before is not None and int(before) != now:
        raise AntError(
            f"{path} decays its {optim.schedule} learning rate over {before} steps, this recipe "
            f"over {now}: set optim.decay_steps={before} to keep the run's curve, or start a new "
            "run with --run-dir"
        )


def _restore(state: dict[str, Any], step: TrainStep, ctx: Runtime, path: Path) -> int:
    try:
        step.model.load_state_dict(state["model"])
        step.ema.load_state_dict(state["ema"])
        step.method.load_state_dict(state["method"])
        if step.weighting is not None:
            step.weighting.load_state_dict(state.get("weighting") or {})
        # The optimizer's moments come from the checkpoint, its settings from the recipe
        # (load_state_dict would otherwise bring back the run's old lr, betas, weight decay).
        settings = [
            {k: v for k, v in g.items() if k != "params"} for g in step.optimizer.param_groups
        ]
        step.optimizer.load_state_dict(state["optimizer"])
        for group, chosen in zip(step.optimizer.param_groups, settings, strict=True):
            group.update(chosen)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise AntError(
            f"checkpoint {path} does not fit this recipe ({first}); resume with the recipe it "
            "was trained with (its copy is recipe.yaml in the run directory)"
        ) from None
    if step.scaler is not None and state.get("scaler") is not None:
        step.scaler.load_state_dict(state["scaler"])
    if step.scheduler is not None:
        _join_schedule(step.scheduler, int(state["step"]))
    restore_rng_state(state.get("rng"), ctx)
    step.steps_done = int(state["step"])
    return step.steps_done
