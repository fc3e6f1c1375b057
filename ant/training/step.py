"""One training step: timesteps, noising, per-sample loss, per-cluster losses, the method, update.

Loss-based methods back-propagate ``method.combine(l)`` once (through DDP, which averages the
gradients). Gradient-based methods get the k per-cluster gradients of the plain module
(:mod:`ant.training.task_grads`), averaged over ranks, and their combined direction becomes the
gradient. The step returns tensors only; nothing in it reads a value back to the host, so the
GPU runs ahead of Python (Nash-MTL's occasional solve is the exception). Reading the returned
tensors (``.item()``) is left to logging steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from ant.diffusion import GaussianDiffusion
from ant.methods import GradientMethod, Method, TimestepWeighting
from ant.training.ema import update_ema
from ant.training.task_grads import (
    assign_grads,
    task_grads_backward,
    task_grads_vmap,
    trainable,
)
from ant.training.timesteps import (
    ClusterTable,
    cluster_losses,
    cluster_means,
    stratified_timesteps,
    uniform_timesteps,
)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


@dataclass
class TrainStep:
    """The parts a training step composes; :meth:`__call__` runs one step on a batch.

    ``task_grads`` chooses how gradient methods get per-cluster gradients: ``vmap`` (one
    batched pass; needs stratified sampling) or ``backward`` (k backward passes).
    ``timestep_range`` restricts training to an inclusive timestep interval.
    ``steps_done`` counts updates (the trainer sets it on resume).
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
    task_grads: str = "vmap"
    timestep_range: tuple[int, int] | None = None
    steps_done: int = 0

    def __post_init__(self) -> None:
        if self.precision == "fp16" and self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.clusters.starts.device.type)
        limits = [c for c in (self.grad_clip, self.method.max_grad_norm) if c is not None]
        self._clip = min(limits) if limits else None

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[None]:
        dtype = AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    def timesteps(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps and their clusters for a local batch of size ``batch``."""
        if self.sampling == "stratified":
            return stratified_timesteps(self.clusters, batch)
        return uniform_timesteps(
            self.clusters, self.diffusion.num_timesteps, batch, self.timestep_range
        )

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
        """One optimisation step with given timesteps, their clusters and noise."""
        self.steps_done += 1
        labels = y if self.conditional else None
        x_t = self.diffusion.q_sample(x0, t, noise)
        self.optimizer.zero_grad(set_to_none=True)
        method = self.method
        if isinstance(method, GradientMethod) and method.wants_grads(self.steps_done):
            per_sample, objective = self._gradient_backward(
                method, x0, x_t, t, labels, noise, cluster
            )
        else:
            per_sample, objective = self._loss_backward(x0, x_t, t, labels, noise, cluster)
        self._sync_own_grads()
        grad_norm = None
        if self._clip is not None or measure:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            limit = self._clip if self._clip is not None else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(list(self._model_parameters()), limit)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        update_ema(self.ema, unwrap(self.model), self.ema_decay)
        k = self.clusters.k
        if method.observes_losses:
            observed = cluster_means(per_sample, cluster, k)
            if self.world_size > 1:
                dist.all_reduce(observed, op=dist.ReduceOp.AVG)
            method.observe(observed)
        extra = {f"method/{key}": value for key, value in method.metrics().items()}
        if self.weighting is not None:
            extra |= {f"weighting/{key}": value for key, value in self.weighting.metrics().items()}
        return StepOutput(
            loss=per_sample.mean(),
            objective=objective,
            cluster_loss=cluster_means(per_sample, cluster, k),
            cluster_weight=method.task_weights(),
            grad_norm=grad_norm,
            extra=extra,
        )

    def _loss_backward(
        self,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None,
        noise: torch.Tensor,
        cluster: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Back-propagate the method's combined loss; returns per-sample losses and objective."""
        with self._autocast(x0.device):
            output = self.model(x_t, t, labels)
        per_sample = self.per_sample_loss(output, x0, x_t, t, noise)
        total = self.method(cluster_losses(per_sample, cluster, self.clusters.k))
        if self.scaler is not None:
            self.scaler.scale(total).backward()
        else:
            total.backward()
        return per_sample.detach(), total.detach()

    def _gradient_backward(
        self,
        method: GradientMethod,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None,
        noise: torch.Tensor,
        cluster: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Set the gradient to the method's combination of the per-cluster gradients.

        Row i of the gradient matrix is the gradient of ``l_i / k``; under fp16 the losses are
        scaled by the GradScaler's scale and the direction scaled back, so the scaler still
        skips steps with overflowing gradients.
        """
        k = self.clusters.k
        module = unwrap(self.model)
        params = [p for _, p in trainable(module)]
        scale = None if self.scaler is None else self.scaler.scale(torch.ones((), device=x0.device))
        if self.task_grads == "vmap":

            def chunk_loss(
                call: Callable[..., torch.Tensor],
                x0_c: torch.Tensor,
                x_t_c: torch.Tensor,
                t_c: torch.Tensor,
                labels_c: torch.Tensor | None,
                noise_c: torch.Tensor,
            ) -> tuple[torch.Tensor, torch.Tensor]:
                with self._autocast(x0_c.device):
                    output = call(x_t_c, t_c, labels_c)
                per = self.per_sample_loss(output, x0_c, x_t_c, t_c, noise_c)
                loss = per.mean() / k
                return (loss if scale is None else loss * scale), per.detach()

            def chunks(value: torch.Tensor | None) -> torch.Tensor | None:
                return None if value is None else value.reshape(k, -1, *value.shape[1:])

            grads, per = task_grads_vmap(
                module, chunk_loss, [chunks(v) for v in (x0, x_t, t, labels, noise)]
            )
            per_sample = per.reshape(-1)
        else:
            with self._autocast(x0.device):
                output = module(x_t, t, labels)
            per_sample_graph = self.per_sample_loss(output, x0, x_t, t, noise)
            task_losses = cluster_losses(per_sample_graph, cluster, k) / k
            grads = task_grads_backward(
                params, task_losses if scale is None else task_losses * scale
            )
            per_sample = per_sample_graph.detach()
        losses = cluster_losses(per_sample, cluster, k)
        if self.world_size > 1:
            dist.all_reduce(grads, op=dist.ReduceOp.AVG)
            dist.all_reduce(losses, op=dist.ReduceOp.AVG)
        if scale is not None:
            grads = grads / scale
        direction = method.combine_grads(grads, losses)
        assign_grads(params, direction if scale is None else direction * scale)
        return per_sample, losses.mean()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and ``torch.compile`` wrappers."""
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner)
    return getattr(inner, "_orig_mod", inner)
