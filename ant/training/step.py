"""One training step: timesteps, noising, per-sample loss, per-cluster losses, the method, update.

The step returns tensors only; nothing in it reads a value back to the host, so the GPU runs
ahead of Python. Reading the returned tensors (``.item()``) is left to logging steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from ant.diffusion import GaussianDiffusion
from ant.methods import LossMethod
from ant.training.ema import update_ema
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
    ``objective`` is what the method back-propagated (e.g. the UW objective, which can be < 0).
    """

    loss: torch.Tensor
    objective: torch.Tensor
    cluster_loss: torch.Tensor
    cluster_weight: torch.Tensor
    grad_norm: torch.Tensor | None


@dataclass
class TrainStep:
    """The parts a training step composes; :meth:`__call__` runs one step on a batch."""

    model: nn.Module
    ema: nn.Module
    diffusion: GaussianDiffusion
    method: LossMethod
    clusters: ClusterTable
    optimizer: torch.optim.Optimizer
    ema_decay: float
    precision: str = "fp32"
    grad_clip: float | None = None
    sampling: str = "stratified"
    conditional: bool = True
    world_size: int = 1
    scaler: torch.amp.GradScaler | None = field(default=None)

    def __post_init__(self) -> None:
        if self.precision == "fp16" and self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.clusters.starts.device.type)

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[None]:
        dtype = AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    def timesteps(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps and their clusters for a local batch of size ``batch``."""
        if self.sampling == "stratified":
            return stratified_timesteps(self.clusters, batch)
        return uniform_timesteps(self.clusters, self.diffusion.num_timesteps, batch)

    def _sync_method_grads(self) -> None:
        """Average the method's own gradients (e.g. UW's log-variances) over ranks."""
        grads = [p.grad for p in self.method.parameters() if p.grad is not None]
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
        x_t = self.diffusion.q_sample(x0, t, noise)
        with self._autocast(x0.device):
            output = self.model(x_t, t, y if self.conditional else None)
        losses = self.diffusion.training_losses(output.float(), x0, x_t, t, noise)
        k = self.clusters.k
        total = self.method(cluster_losses(losses.loss, cluster, k))
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
        else:
            total.backward()
        self._sync_method_grads()
        grad_norm = None
        if self.grad_clip is not None or measure:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            limit = self.grad_clip if self.grad_clip is not None else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(list(self._model_parameters()), limit)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        update_ema(self.ema, unwrap(self.model), self.ema_decay)
        return StepOutput(
            loss=losses.loss.detach().mean(),
            objective=total.detach(),
            cluster_loss=cluster_means(losses.loss, cluster, k),
            cluster_weight=self.method.task_weights(),
            grad_norm=grad_norm,
        )


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and ``torch.compile`` wrappers."""
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner)
    return getattr(inner, "_orig_mod", inner)
