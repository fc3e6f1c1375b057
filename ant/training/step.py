"""One training step: timesteps, noising, per-sample loss, per-cluster losses, the method, update.

Loss-based methods back-propagate ``method.combine(l)`` once (through DDP, which averages the
gradients). Gradient-based methods get the k per-cluster gradients of the plain module
(:mod:`ant.training.grouped`, or :mod:`ant.training.task_grads`), averaged over ranks; from
their Gram matrix the method picks coefficients ``c`` and ``sum_j c_j g_j`` becomes the
gradient. With ``grad_accum = N`` the local batch is split into N micro-batches, each
stratified like the whole, and the update equals one step on the whole batch. The step returns
tensors only; nothing in it reads a value back to the host, so the GPU runs ahead of Python
(Nash-MTL's occasional solve, and grouped gradients under uniform timestep sampling, which read
the k cluster counts, are the exceptions). Reading the returned tensors (``.item()``) is left
to logging steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ant.diffusion import GaussianDiffusion
from ant.methods import GradientMethod, Method, TimestepWeighting
from ant.training.ema import update_ema
from ant.training.grouped import GroupedGrads
from ant.training.grouped_layers import GroupLayout
from ant.training.task_grads import (
    TaskGradients,
    assign_grads,
    gradient_cosines,
    task_grads_backward,
    trainable,
    vmap_rows,
)
from ant.training.timesteps import (
    ChunkLayout,
    ClusterTable,
    chunked_timesteps,
    cluster_losses,
    cluster_means,
    stratified_timesteps,
    uniform_timesteps,
)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
TASK_GRAD_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class StepOutput:
    """What one step produced, as device tensors (read them only when logging).

    ``loss`` is the plain mean of the per-sample training loss, comparable across methods;
    ``objective`` is what the method optimised (e.g. the UW objective, which can be < 0);
    ``extra`` holds the method's and the weighting's own scalars (``method/...``).
    """

    loss: torch.Tensor
    objective: torch.Tensor
    cluster_loss: torch.Tensor
    cluster_weight: torch.Tensor
    grad_norm: torch.Tensor | None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    conflict: torch.Tensor | None = None
    finite: torch.Tensor = field(default_factory=lambda: torch.ones((), dtype=torch.bool))
    """Whether the step was finite (:mod:`ant.training.guard`); False also when skipped."""


@dataclass
class TrainStep:
    """The parts a training step composes; :meth:`__call__` runs one step on a batch.

    ``task_grads`` chooses how per-cluster gradients are computed: ``grouped`` (one ordinary
    backward pass, :mod:`ant.training.grouped`), ``vmap`` (one batched pass; needs stratified
    sampling) or ``backward`` (k backward passes); ``task_grads_dtype`` is the dtype of the
    grouped ``[k, P]`` buffer. ``grad_accum`` splits the local batch into that many
    micro-batches. ``conflict_every`` computes the per-cluster gradients every that many steps
    for any method and reports their cosine matrix (gradient methods report it on every
    measured step). ``timestep_range`` restricts training to an inclusive timestep interval.
    ``on_nonfinite="skip"`` drops an update whose gradient norm is not finite (reading one flag
    per step; fp16 leaves that to the GradScaler). ``scheduler`` advances the learning rate after
    every step (:mod:`ant.training.lr_schedule`). ``steps_done`` counts steps (the trainer sets
    it on resume).
    """

    model: nn.Module
    ema: nn.Module
    diffusion: GaussianDiffusion
    method: Method
    clusters: ClusterTable
    optimizer: torch.optim.Optimizer
    ema_decay: float
    precision: str = "fp32"
    grad_clip: float | None = None
    sampling: str = "stratified"
    conditional: bool = True
    world_size: int = 1
    scaler: torch.amp.GradScaler | None = field(default=None)
    weighting: TimestepWeighting | None = None
    task_grads: str = "grouped"
    task_grads_dtype: str = "fp32"
    grad_accum: int = 1
    conflict_every: int | None = None
    timestep_range: tuple[int, int] | None = None
    on_nonfinite: str = "stop"
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    steps_done: int = 0
    lr: float = field(default=0.0, init=False)
    """The model's learning rate in the last update (read from the optimizer, no device sync)."""
    _grouped_grads: GroupedGrads | None = field(default=None, init=False, repr=False)
    _buffer: torch.Tensor | None = field(default=None, init=False, repr=False)
    _layouts: dict[int, ChunkLayout] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.precision == "fp16" and self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.clusters.starts.device.type)
        limits = [c for c in (self.grad_clip, self.method.max_grad_norm) if c is not None]
        self._clip = min(limits) if limits else None

    @property
    def fp16(self) -> bool:
        """Whether a GradScaler scales the loss (it skips non-finite steps itself)."""
        return self.scaler is not None

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[None]:
        dtype = AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    def timesteps(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps and their clusters for a local batch of size ``batch``."""
        if self.sampling == "stratified":
            return stratified_timesteps(self.clusters, batch)
        if self.sampling == "proportional":
            cluster = self.layout(batch).cluster
            return chunked_timesteps(self.clusters, cluster), cluster
        return uniform_timesteps(
            self.clusters, self.diffusion.num_timesteps, batch, self.timestep_range
        )

    def layout(self, batch: int) -> ChunkLayout:
        """The proportional chunks of a local batch of ``batch`` samples (built once)."""
        found = self._layouts.get(batch)
        if found is None:
            found = ChunkLayout.proportional(self.clusters, batch, self.grad_accum)
            self._layouts[batch] = found
        return found

    def per_sample_loss(
        self,
        output: torch.Tensor,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """The training loss of each sample, with the timestep weighting on its denoising term."""
        losses = self.diffusion.training_losses(output.float(), x0, x_t, t, noise)
        mse = losses.mse if self.weighting is None else self.weighting(losses.mse, t)
        return mse if losses.vb is None else mse + losses.vb

    def _own_parameters(self) -> list[nn.Parameter]:
        params = list(self.method.parameters())
        if self.weighting is not None:
            params += list(self.weighting.parameters())
        return params

    def _sync_own_grads(self) -> None:
        """Average the method's and weighting's own gradients (e.g. UW's) over ranks."""
        grads = [p.grad for p in self._own_parameters() if p.grad is not None]
        if self.world_size > 1 and grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.AVG)
            offset = 0
            for grad in grads:
                grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
                offset += grad.numel()

    def _model_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    def __call__(self, x0: torch.Tensor, y: torch.Tensor | None, measure: bool) -> StepOutput:
        """One optimisation step on the batch ``(x0, y)``; ``measure`` adds the gradient norm."""
        t, cluster = self.timesteps(x0.shape[0])
        noise = torch.randn_like(x0)
        return self.update(x0, y, t, cluster, noise, measure)

    def update(
        self,
        x0: torch.Tensor,
        y: torch.Tensor | None,
        t: torch.Tensor,
        cluster: torch.Tensor,
        noise: torch.Tensor,
        measure: bool,
    ) -> StepOutput:
        """One optimisation step with given timesteps, their clusters and noise.

        The batch is split into ``grad_accum`` micro-batches (:meth:`micro_batches`); the
        update equals one step on the whole batch.
        """
        self.steps_done += 1
        labels = y if self.conditional else None
        x_t = self.diffusion.q_sample(x0, t, noise)
        self.optimizer.zero_grad(set_to_none=True)
        method = self.method
        reevaluate = method.observes_losses and method.reevaluates_batch
        rng = _rng_state(x0.device) if reevaluate else None
        every = self.conflict_every
        watch = every is not None and self.steps_done % every == 0
        batch = Batch(x0, x_t, t, labels, noise, cluster)
        if isinstance(method, GradientMethod) and method.wants_grads(self.steps_done):
            outcome = self._gradient_update(method, batch)
        elif watch or (self.grad_accum > 1 and not method.linear_in_losses):
            outcome = self._loss_update_from_task_grads(batch)
        elif self.grad_accum > 1:
            outcome = self._accumulated_loss_backward(batch)
        else:
            outcome = self._loss_backward(batch)
        per_sample, cluster = outcome.per_sample, outcome.cluster
        self._sync_own_grads()
        grad_norm = None
        if self._clip is not None or measure:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            limit = self._clip if self._clip is not None else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(list(self._model_parameters()), limit)
        loss = per_sample.mean()
        finite = torch.isfinite(loss) & torch.isfinite(outcome.objective)
        if grad_norm is not None:
            finite = finite & torch.isfinite(grad_norm)
        k = self.clusters.k
        applied = True
        if self.scaler is not None:
            # The GradScaler's scale tensor shrinks exactly when it skips a non-finite step.
            before = self.scaler._scale.clone() if self.scaler._scale is not None else None
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if before is not None and self.scaler._scale is not None:
                finite = self.scaler._scale >= before
        elif self.on_nonfinite == "skip" and not bool(self._update_is_finite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            finite, applied = torch.zeros((), dtype=torch.bool, device=loss.device), False
        else:
            self.optimizer.step()
        self.lr = float(self.optimizer.param_groups[0]["lr"])
        if self.scheduler is not None:
            # Every step advances the schedule, skipped or not, so the rate is a function of
            # the step alone.
            self.scheduler.step()
        if applied:
            update_ema(self.ema, unwrap(self.model), self.ema_decay)
            if method.observes_losses:
                observed = cluster_means(per_sample, cluster, k)
                if rng is not None:
                    observed = torch.stack([observed, self._losses_after_update(outcome, rng)])
                if self.world_size > 1:
                    dist.all_reduce(observed, op=dist.ReduceOp.AVG)
                if rng is not None:
                    method.observe_update(observed[0], observed[1])
                else:
                    method.observe(observed)
        extra = {f"method/{key}": value for key, value in method.metrics().items()}
        if self.weighting is not None:
            extra |= {f"weighting/{key}": value for key, value in self.weighting.metrics().items()}
        return StepOutput(
            loss=loss,
            objective=outcome.objective,
            cluster_loss=cluster_means(per_sample, cluster, k),
            cluster_weight=method.task_weights(),
            grad_norm=grad_norm,
            extra=extra,
            conflict=(
                gradient_cosines(outcome.grads.gram())
                if outcome.grads is not None and (measure or watch)
                else None
            ),
            finite=finite,
        )

    def _update_is_finite(self, grad_norm: torch.Tensor | None) -> torch.Tensor:
        """Whether the gradient of every optimised parameter is finite (its norm, all-reduced
        by DDP and the per-cluster paths, so every rank skips alike)."""
        grads = [p.grad for p in self._own_parameters() if p.grad is not None]
        if grad_norm is None:
            grads += [p.grad for p in self._model_parameters() if p.grad is not None]
        elif not grads:
            return torch.isfinite(grad_norm)
        total = torch.nn.utils.get_total_norm(grads)
        return torch.isfinite(total if grad_norm is None else total + grad_norm)

    @torch.no_grad()
    def _losses_after_update(self, outcome: Outcome, rng: torch.Tensor) -> torch.Tensor:
        """The k cluster means of the step's batch under the updated model: its parts forwarded
        in the order of the step's pass, from the random state the pass started with, so each
        sample gets the same label dropout (exactly so for one plain or grouped pass; ``vmap``
        draws its own); the trainer's random stream is left as it was."""
        module = unwrap(self.model)
        device = outcome.cluster.device
        total = sum(part.x0.shape[0] for part in outcome.parts)
        per_samples = []
        with _forked_rng(device, rng):
            for part in outcome.parts:
                per_sample, _ = self._forward_losses(module, part, total)
                per_samples.append(per_sample)
        return cluster_means(torch.cat(per_samples), outcome.cluster, self.clusters.k)

    def micro_batches(self, batch: Batch) -> list[Batch]:
        """The ``grad_accum`` micro-batches of a local batch, each stratified like the whole.

        Under stratified sampling micro-batch m takes the m-th ``1 / grad_accum`` of every
        cluster's chunk, so it is k equal chunks again; under proportional sampling the m-th
        ``n_i`` of every chunk (:class:`ChunkLayout`); under uniform sampling the m-th
        contiguous slice.
        """
        parts = self.grad_accum
        if parts == 1:
            return [batch]
        size = batch.x0.shape[0]
        if self.sampling == "proportional":
            return [batch.select(index) for index in self.layout(size).micro]
        if self.sampling == "stratified":
            k = self.clusters.k
            chunk, share = size // k, size // (k * parts)
            base = torch.arange(k, device=batch.x0.device)[:, None] * chunk
            offsets = torch.arange(share, device=batch.x0.device)[None, :]
            return [batch.select((base + m * share + offsets).reshape(-1)) for m in range(parts)]
        share = size // parts
        return [batch.narrow(m * share, share) for m in range(parts)]

    def _forward_losses(
        self, model: nn.Module, batch: Batch, total: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample losses of ``batch`` and its part of the k cluster losses of a local batch
        of ``total`` samples (``l_i = (k / total) * sum of its samples' losses``)."""
        with self._autocast(batch.x0.device):
            output = model(batch.x_t, batch.t, batch.labels)
        per_sample = self.per_sample_loss(output, batch.x0, batch.x_t, batch.t, batch.noise)
        k = self.clusters.k
        if self.sampling == "proportional":
            share = cluster_losses(per_sample, batch.cluster, k, self.layout(total).counts)
        else:
            share = cluster_losses(per_sample, batch.cluster, k) * (per_sample.shape[0] / total)
        return per_sample, share

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _loss_backward(self, batch: Batch) -> Outcome:
        """Back-propagate the method's combined loss."""
        per_sample, losses = self._forward_losses(self.model, batch, batch.x0.shape[0])
        total = self.method(losses)
        self._backward(total)
        return Outcome(per_sample.detach(), batch.cluster, total.detach(), [batch])

    def _accumulated_loss_backward(self, batch: Batch) -> Outcome:
        """Gradient accumulation for a method whose ``combine`` is affine in the losses.

        With ``combine(l) = w . l + b``, ``w`` is read off one call at ``l = 0`` (the method is
        called once per optimizer step), each micro-batch back-propagates ``w . l_m`` (DDP
        synchronises only the last), and the method's own parameters get the gradient of
        ``b + w . l`` at the whole batch's losses ``l = sum_m l_m``.
        """
        k = self.clusters.k
        probe = torch.zeros(k, device=batch.x0.device, requires_grad=True)
        base = self.method(probe)
        (slope,) = torch.autograd.grad(base, probe, create_graph=True, allow_unused=True)
        if slope is None:
            slope = torch.zeros_like(probe)
        fixed = slope.detach()
        size = batch.x0.shape[0]
        micro = self.micro_batches(batch)
        per_samples, losses = [], torch.zeros(k, device=batch.x0.device)
        for index, part in enumerate(micro):
            with self._no_sync(index < len(micro) - 1):
                per_sample, share = self._forward_losses(self.model, part, size)
                self._backward((fixed * share).sum())
            per_samples.append(per_sample.detach())
            losses = losses + share.detach()
        objective = base + (slope * losses).sum()
        if objective.requires_grad:
            self._backward(objective)
        clusters = torch.cat([part.cluster for part in micro])
        return Outcome(torch.cat(per_samples), clusters, objective.detach(), micro)

    def _no_sync(self, skip: bool) -> contextlib.AbstractContextManager[None]:
        """DDP's ``no_sync`` while ``skip`` (micro-batches before the last), else nothing."""
        inner = getattr(self.model, "_orig_mod", self.model)
        if skip and isinstance(inner, DistributedDataParallel):
            return inner.no_sync()
        return contextlib.nullcontext()

    def _gradient_update(self, method: GradientMethod, batch: Batch) -> Outcome:
        """Set the gradient to the method's combination of the per-cluster gradients.

        Gram-matrix methods give coefficients ``c`` and the update ``sum_j c_j g_j`` is written
        into ``.grad``; others get the ``[k, P]`` rows (divided by the fp16 loss scale, which
        their direction is multiplied by again, so the GradScaler still skips overflows).
        """
        micro = self.task_parts(batch)
        grads = self.task_gradients(micro)
        if method.uses_gram():
            coefficients = method.combine_gram(grads.gram(), grads.losses)
            direction = coefficients.to(grads.rows.dtype) @ grads.rows
        else:
            scale = grads.scale
            rows = grads.rows if scale is None else grads.rows / scale
            direction = method.combine_grads(rows, grads.losses)
            if scale is not None:
                direction = direction * scale
        assign_grads(grads.params, direction)
        return Outcome(grads.per_sample, grads.cluster, grads.losses.mean(), micro, grads)

    def _loss_update_from_task_grads(self, batch: Batch) -> Outcome:
        """A loss method's update from per-cluster gradients (conflict steps, or accumulation of
        a method that is not affine in the losses).

        ``combine`` is called once at the whole batch's losses ``l`` (detached from the model):
        its backward gives the method's own gradients, and ``w = d combine / d l``; the model's
        gradient ``sum_i w_i grad l_i`` is ``sum_i (k w_i) g_i`` over the rows ``g_i`` (gradients
        of ``l_i / k``).
        """
        micro = self.task_parts(batch)
        grads = self.task_gradients(micro)
        losses = grads.losses.detach().clone().requires_grad_()
        total = self.method(losses)
        self._backward(total)
        if losses.grad is None:
            raise RuntimeError(f"method {type(self.method).__name__}: combine ignores the losses")
        direction = (self.clusters.k * losses.grad).to(grads.rows.dtype) @ grads.rows
        assign_grads(grads.params, direction)
        return Outcome(grads.per_sample, grads.cluster, total.detach(), micro, grads)

    def task_parts(self, batch: Batch) -> list[Batch]:
        """The micro-batches :meth:`task_gradients` takes, in its order (grouped gradients of
        uniformly sampled timesteps need the samples sorted by cluster; proportional chunks
        are sorted already)."""
        if self.task_grads == "grouped" and self.sampling == "uniform":
            batch = batch.select(torch.argsort(batch.cluster, stable=True))
        return self.micro_batches(batch)

    def task_gradients(self, micro: list[Batch]) -> TaskGradients:
        """The k per-cluster gradients of the local batch's parts ``micro``
        (:meth:`task_parts`), averaged over ranks.

        Row i of ``rows`` is the gradient of ``l_i / k`` (times the fp16 loss scale, if any),
        summed over the micro-batches, computed on the plain module by ``task_grads``.
        """
        k = self.clusters.k
        module = unwrap(self.model)
        device = micro[0].x0.device
        scale = None if self.scaler is None else self.scaler.scale(torch.ones((), device=device))
        size = sum(part.x0.shape[0] for part in micro)
        clusters = torch.cat([part.cluster for part in micro])
        per_samples: list[torch.Tensor] = []
        losses = torch.zeros(k, device=device)
        params = (
            self._grouped(module).parameters
            if self.task_grads == "grouped"
            else [p for _, p in trainable(module)]
        )
        if self.task_grads == "grouped":
            grouped = self._grouped(module)
            if self._buffer is None:
                dtype = TASK_GRAD_DTYPES[self.task_grads_dtype]
                self._buffer = grouped.buffer(k, dtype, device)
            sink = grouped.sink(self._buffer)
            for part in micro:
                if self.sampling == "stratified":
                    layout = GroupLayout.chunks(k, part.x0.shape[0], device)
                elif self.sampling == "proportional":
                    layout = GroupLayout(self.layout(size).sizes, part.cluster)
                else:
                    layout = GroupLayout.sorted(part.cluster, k)
                with grouped.capture(sink, layout):
                    per_sample, share = self._forward_losses(module, part, size)
                    loss = share.sum() / k
                    (loss if scale is None else loss * scale).backward()
                per_samples.append(per_sample.detach())
                losses = losses + share.detach()
            sink.finish()
            rows = self._buffer
        elif self.task_grads == "vmap":
            rows = self._vmap_rows(module, micro, scale, per_samples)
            losses = cluster_losses(torch.cat(per_samples), clusters, k)
        else:
            rows = torch.zeros(k, sum(p.numel() for p in params), device=device)
            for part in micro:
                per_sample, share = self._forward_losses(module, part, size)
                task_losses = share / k
                rows += task_grads_backward(
                    params, task_losses if scale is None else task_losses * scale
                )
                per_samples.append(per_sample.detach())
                losses = losses + share.detach()
        if self.world_size > 1:
            dist.all_reduce(rows, op=dist.ReduceOp.AVG)
            dist.all_reduce(losses, op=dist.ReduceOp.AVG)
        return TaskGradients(
            params=params,
            rows=rows,
            losses=losses,
            per_sample=torch.cat(per_samples),
            cluster=clusters,
            scale=scale,
        )

    def _vmap_rows(
        self,
        module: nn.Module,
        micro: list[Batch],
        scale: torch.Tensor | None,
        per_samples: list[torch.Tensor],
    ) -> torch.Tensor:
        """Per-cluster gradients by ``vmap(grad(...))``, summed over the micro-batches."""

        def per_sample_loss(call: Callable[..., torch.Tensor], *chunk: Any) -> torch.Tensor:
            x0, x_t, t, labels, noise = chunk
            with self._autocast(x0.device):
                output = call(x_t, t, labels)
            return self.per_sample_loss(output, x0, x_t, t, noise)

        parts = [(p.x0, p.x_t, p.t, p.labels, p.noise) for p in micro]
        return vmap_rows(module, parts, per_sample_loss, self.clusters.k, scale, per_samples)

    @property
    def task_gradient_buffer(self) -> torch.Tensor | None:
        """The grouped ``[k, P]`` buffer, once a step has allocated it."""
        return self._buffer

    def _grouped(self, module: nn.Module) -> GroupedGrads:
        if self._grouped_grads is None or self._grouped_grads.module is not module:
            self._grouped_grads = GroupedGrads(module)
        return self._grouped_grads


@dataclass(frozen=True)
class Batch:
    """A local batch as the step uses it: clean and noised inputs, timesteps, labels, noise and
    each sample's cluster."""

    x0: torch.Tensor
    x_t: torch.Tensor
    t: torch.Tensor
    labels: torch.Tensor | None
    noise: torch.Tensor
    cluster: torch.Tensor

    def select(self, index: torch.Tensor) -> Batch:
        """The samples at ``index``."""
        return Batch(
            *(None if v is None else v.index_select(0, index) for v in self._values())  # type: ignore[arg-type]
        )

    def narrow(self, first: int, count: int) -> Batch:
        """The ``count`` samples from ``first`` on."""
        return Batch(
            *(None if v is None else v.narrow(0, first, count) for v in self._values())  # type: ignore[arg-type]
        )

    def _values(self) -> tuple[torch.Tensor | None, ...]:
        return (self.x0, self.x_t, self.t, self.labels, self.noise, self.cluster)


@dataclass
class Outcome:
    """What a backward pass of a step left: per-sample losses with their clusters (in the order
    the pass saw them), the objective, the parts of the batch it forwarded (in that order), and
    the per-cluster gradients if it computed them."""

    per_sample: torch.Tensor
    cluster: torch.Tensor
    objective: torch.Tensor
    parts: list[Batch]
    grads: TaskGradients | None = None


def _rng_state(device: torch.device) -> torch.Tensor:
    """The state of the generator that ``device``'s random draws use (a host copy)."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


@contextlib.contextmanager
def _forked_rng(device: torch.device, state: torch.Tensor) -> Iterator[None]:
    """Draw from ``state`` inside the block, and continue afterwards as if nothing was drawn."""
    cuda = device.type == "cuda"
    devices = []
    if cuda:
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        if cuda:
            torch.cuda.set_rng_state(state, device)
        else:
            torch.set_rng_state(state)
        yield


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and ``torch.compile`` wrappers."""
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner)
    return getattr(inner, "_orig_mod", inner)
