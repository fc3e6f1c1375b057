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
the parameter size. Gradients are computed on the plain module (not a DDP wrapper): averaging
over ranks is the caller's job.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
