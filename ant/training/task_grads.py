"""Per-task gradients: the k gradients that gradient-based multi-task methods combine.

Two ways to get them, both exact:

* ``vmap``: the batch is split into k equal chunks (one per task, as stratified timestep sampling
  lays it out) and ``torch.func.vmap(grad(chunk loss))`` computes all k gradients in one batched
  forward and backward, at about the cost of one ordinary step (measured in method-notes Sec. 4:
  1026 ms against 1075 ms for a vanilla step and 3393 ms for k separate backward passes).
* ``backward``: one forward, then ``torch.autograd.grad`` of each task loss with the graph
  retained: k backward passes, but it works for any grouping of the samples (uniform timestep
  sampling gives clusters of unequal size) and any model.

Both return a ``[k, P]`` matrix over the P trainable parameters, so gradient memory is k times
the parameter size (the third way, ``grouped`` from one ordinary backward pass, is
:mod:`ant.training.grouped`). Gradients are computed on the plain module (not a DDP wrapper):
averaging over ranks is the caller's job. :class:`TaskGradients` holds a step's rows whichever
way they were computed, with their Gram matrix and cosines.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

ModelCall = Callable[..., torch.Tensor]
ChunkLoss = Callable[..., tuple[torch.Tensor, Any]]


def trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The module's parameters that require gradients, with their names, in a fixed order."""
    return [(name, p) for name, p in module.named_parameters() if p.requires_grad]


@contextmanager
def unfused_attention(module: nn.Module) -> Iterator[None]:
    """Use explicit attention math inside ``module`` while the block runs.

    ``scaled_dot_product_attention`` has no batching rule, so under ``vmap`` PyTorch would run it
    once per task; timm-style attention layers expose ``fused_attn`` to switch to the explicit
    (batchable) form, which computes the same function.
    """
    switched = [m for m in module.modules() if getattr(m, "fused_attn", False) is True]
    for m in switched:
        m.fused_attn = False  # type: ignore[assignment]
    try:
        yield
    finally:
        for m in switched:
            m.fused_attn = True  # type: ignore[assignment]


def task_grads_vmap(
    module: nn.Module, chunk_loss: ChunkLoss, chunks: Sequence[torch.Tensor | None]
) -> tuple[torch.Tensor, Any]:
    """Gradients of ``chunk_loss`` on each of k input chunks, by ``vmap(grad(...))``.

    ``chunks`` are tensors of shape ``[k, n, ...]`` (or ``None``, passed through unbatched);
    ``chunk_loss(call, *chunk)`` receives ``call(*args)``, the module applied with the
    differentiated parameters, and one chunk of each input (shape ``[n, ...]``); it returns
    ``(scalar loss, aux)``. Returns the ``[k, P]`` gradient matrix and the ``aux`` values
    stacked over the k chunks. Random operations inside (label dropout) draw independently
    per chunk. Operations without a batching rule (``log_ndtr`` of the variance bound) run once
    per chunk; their warnings are silenced, as they only touch small elementwise tensors.
    """
    named = trainable(module)
    params = {name: p.detach() for name, p in named}

    def loss(p: dict[str, torch.Tensor], *chunk: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        def call(*args: Any) -> torch.Tensor:
            out: torch.Tensor = functional_call(module, p, args)
            return out

        return chunk_loss(call, *chunk)

    in_dims = (None, *(None if c is None else 0 for c in chunks))
    per_task = vmap(grad(loss, has_aux=True), in_dims=in_dims, randomness="different")
    with unfused_attention(module), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*batching rule.*")
        grads, aux = per_task(params, *chunks)
    k = next(c.shape[0] for c in chunks if c is not None)
    return flatten_task_grads([grads[name] for name, _ in named], k), aux


def vmap_rows(
    module: nn.Module,
    parts: Sequence[tuple[torch.Tensor | None, ...]],
    per_sample_loss: Callable[..., torch.Tensor],
    k: int,
    scale: torch.Tensor | None,
    per_samples: list[torch.Tensor],
) -> torch.Tensor:
    """The ``[k, P]`` gradients of ``mean(per_sample_loss) / (k * len(parts))`` per chunk,
    summed over the micro-batches ``parts``, by :func:`task_grads_vmap`.

    Each part holds the step's tensors (first dimension the batch, k equal chunks of it);
    ``per_sample_loss(call, *chunk)`` gives one chunk's per-sample losses through ``call``, the
    functional model. ``scale`` multiplies the losses (fp16 loss scaling); each part's
    per-sample losses are appended to ``per_samples``.
    """

    def chunk_loss(
        call: Callable[..., torch.Tensor], *chunk: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        per = per_sample_loss(call, *chunk)
        loss = per.mean() / (k * len(parts))
        return (loss if scale is None else loss * scale), per.detach()

    def chunks(value: torch.Tensor | None) -> torch.Tensor | None:
        return None if value is None else value.reshape(k, -1, *value.shape[1:])

    total: torch.Tensor | None = None
    for part in parts:
        grads, per = task_grads_vmap(module, chunk_loss, [chunks(v) for v in part])
        total = grads if total is None else total.add_(grads)
        per_samples.append(per.reshape(-1))
    assert total is not None
    return total


def task_grads_backward(
    params: Sequence[torch.Tensor], task_losses: torch.Tensor, retain_graph: bool = False
) -> torch.Tensor:
    """Gradients of each entry of ``task_losses`` (shape ``[k]``) by k backward passes."""
    k = task_losses.shape[0]
    rows = []
    for i in range(k):
        keep = retain_graph or i < k - 1
        grads = torch.autograd.grad(task_losses[i], params, retain_graph=keep, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1)
                    for g, p in zip(grads, params, strict=True)
                ]
            )
        )
    return torch.stack(rows)


def flatten_task_grads(grads: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    """Per-parameter gradients of shape ``[k, *param.shape]`` as one ``[k, P]`` matrix."""
    return torch.cat([g.reshape(k, -1) for g in grads], dim=1)


def assign_grads(params: Sequence[torch.Tensor], direction: torch.Tensor) -> None:
    """Write the flat update ``direction`` (shape ``[P]``) into the parameters' ``.grad``."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = direction[offset : offset + n].view_as(p).to(p.dtype)
        offset += n
    if offset != direction.numel():
        raise ValueError(f"direction has {direction.numel()} entries, parameters {offset}")


GRAM_COLUMNS = 65536
"""Columns per product in :func:`gram_matrix` (k x 65536 fp32 rows: 1.3 MB at k = 5)."""


def gram_matrix(rows: torch.Tensor) -> torch.Tensor:
    """``rows rows^T`` (``[k, k]``, float64) of ``[k, n]`` rows, in column blocks.

    One ``[k, n] x [n, k]`` product with a tiny k runs far below the memory bandwidth on the
    CPU (BLAS is not made for that shape): for DiT-T/2's ``[5, 7.4M]`` buffer, 30 ms against
    13 ms in blocks of :data:`GRAM_COLUMNS` columns that stay in cache (2 cores). Each block is
    multiplied in the rows' dtype and accumulated in float64.
    """
    k, n = rows.shape
    if rows.device.type != "cpu":
        return (rows @ rows.T).double()
    gram = torch.zeros(k, k, dtype=torch.float64, device=rows.device)
    for first in range(0, n, GRAM_COLUMNS):
        block = rows[:, first : first + GRAM_COLUMNS]
        gram += (block @ block.T).double()
    return gram


@dataclass
class TaskGradients:
    """The k per-cluster gradients of a step: ``rows`` ``[k, P]`` over ``params`` (times
    ``scale`` under fp16), the cluster losses ``[k]`` and per-sample losses, all averaged over
    ranks; the unscaled Gram matrix is formed on first use."""

    params: list[nn.Parameter]
    rows: torch.Tensor
    losses: torch.Tensor
    per_sample: torch.Tensor
    cluster: torch.Tensor
    scale: torch.Tensor | None
    known: torch.Tensor | None = None

    def gram(self) -> torch.Tensor:
        """``G G^T`` of the unscaled rows, float64."""
        if self.known is None:
            gram = gram_matrix(self.rows)
            self.known = gram if self.scale is None else gram / self.scale.double() ** 2
        return self.known


def gradient_cosines(gram: torch.Tensor) -> torch.Tensor:
    """The k x k cosine similarities of the per-cluster gradients from their Gram matrix.

    ``cos(g_i, g_j) = M_ij / sqrt(M_ii M_jj)``: the live view of negative transfer (ANT, Go et
    al. 2023, Sec. 3, O1: distant noise levels conflict). A zero gradient has cosine 0.
    """
    norms = gram.diagonal().clamp_min(0.0).sqrt()
    denominator = (norms[:, None] * norms[None, :]).clamp_min(1e-30)
    return (gram / denominator).float()
