"""Per-cluster gradients from one ordinary backward pass ("grouped" weight gradients).

Each sample's loss depends only on its own forward pass (DiT and ADM have no BatchNorm), so one
backward pass of ``sum_i l_i / k`` gives every activation gradient exactly. The weight gradient
of a layer is a sum over samples, and splitting that sum by the sample's cluster gives the k
per-cluster weight gradients at the cost of the ordinary one. For a Linear layer with input
``x`` ``[B, ..., in]`` and output gradient ``g`` ``[B, ..., out]``, cluster c's gradient is
``g_c^T x_c``: for k equal contiguous chunks (stratified sampling) one ``bmm`` of
``g.reshape(k, -1, out)^T`` and ``x.reshape(k, -1, in)``.

:class:`GroupedGrads` swaps small :class:`torch.autograd.Function`\\ s into the forward of the
model's layer instances while a step runs. Each returns the input gradient as usual and ``None``
for its weight and bias, so autograd computes no full-batch weight gradient, and writes the k
per-cluster gradients into a view of a preallocated ``[k, P]`` buffer (``out=`` where the
dtypes allow). Covered layers: :class:`~torch.nn.Linear`, ``Conv1d/2d/3d`` (any kernel, stride,
padding, dilation, groups; zero padding), :class:`~torch.nn.Embedding` (without ``max_norm``,
``scale_grad_by_freq`` or ``sparse``), and the affine weights of
:class:`~torch.nn.GroupNorm` and :class:`~torch.nn.LayerNorm` (ADM's float32 ``GroupNorm32``
included). A layer called more than once, or a parameter shared by two layers, accumulates.
Other layer types with trainable parameters are reported by :attr:`GroupedGrads.uncovered`,
so the trainer can fall back to ``vmap`` before training (never silently, never wrong); a
parameter that still receives an ordinary gradient during a grouped step raises.

Groups are contiguous in the batch (:class:`GroupLayout`): equal chunks under stratified
sampling, or a batch sorted by cluster with unequal counts under uniform sampling, where
weight gradients are per-segment products and the bias and norm gradients index-based segment
sums. Under autocast the backward multiplies in the forward's compute dtype, as autograd does
for the ordinary layers. The k x k Gram matrix of the per-cluster gradients is formed after the
pass from the whole buffer (:func:`~ant.training.task_grads.gram_matrix`): accumulating it layer
by layer inside the backward pass was measured slower on the CPU (27 ms against 7 ms a step for
DiT-T/2, batch 100, k = 5), and under DDP it has to follow the all-reduce anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ant.training.grouped_layers import FormBuilder, GroupLayout, Sink, Slot, layer_form
from ant.training.task_grads import trainable


class GroupedGrads:
    """Grouped per-cluster gradients for the trainable parameters of ``module``.

    ``parameters`` is the order of the buffer's columns (:func:`trainable`'s order);
    :attr:`uncovered` names the layer types whose trainable parameters no grouped form covers
    (empty when the module is fully covered). :meth:`capture` patches the layers for the body
    of a ``with`` block.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.parameters = [p for _, p in trainable(module)]
        self.slots: list[Slot] = []
        by_id: dict[int, Slot] = {}
        offset = 0
        for index, param in enumerate(self.parameters):
            slot = Slot(index=index, offset=offset, shape=param.shape, numel=param.numel())
            by_id[id(param)] = slot
            self.slots.append(slot)
            offset += param.numel()
        self.numel = offset
        self.layers: list[tuple[nn.Module, FormBuilder, Any]] = []
        uncovered: set[str] = set()
        covered: set[int] = set()
        for layer in module.modules():
            own = [
                (name, p) for name, p in layer.named_parameters(recurse=False) if p.requires_grad
            ]
            if not own:
                continue
            build = layer_form(layer)
            if build is None:
                uncovered.add(type(layer).__name__)
                continue
            names = dict(own)
            slots = tuple(
                by_id[id(names[name])] if name in names else None for name in ("weight", "bias")
            )
            if any(name not in ("weight", "bias") for name in names):
                uncovered.add(type(layer).__name__)
                continue
            self.layers.append((layer, build, slots))
            covered.update(id(p) for _, p in own)
        self.uncovered = sorted(uncovered)
        if not self.uncovered and len(covered) != len(self.parameters):
            self.uncovered = ["(parameters outside any layer)"]

    def buffer(self, k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A new ``[k, P]`` buffer."""
        return torch.empty(k, self.numel, dtype=dtype, device=device)

    def sink(self, buffer: torch.Tensor) -> Sink:
        """A destination for one optimizer step's gradients (kept across its micro-batches)."""
        return Sink(buffer, self.slots)

    @contextmanager
    def capture(self, sink: Sink, layout: GroupLayout) -> Iterator[Sink]:
        """Route the covered layers' weight gradients of the batch of ``layout`` into ``sink``.

        Back-propagate inside the block. A trainable parameter that receives an ordinary
        gradient (used outside its layer's forward) raises ``RuntimeError``.
        """
        if self.uncovered:
            raise RuntimeError(f"grouped gradients do not cover {', '.join(self.uncovered)}")
        sink.layout = layout
        saved: list[tuple[nn.Module, Any]] = []
        for layer, build, slots in self.layers:
            saved.append((layer, layer.__dict__.get("forward")))
            layer.forward = build(layer, sink, slots)
        try:
            yield sink
        finally:
            for layer, previous in saved:
                if previous is None:
                    del layer.forward
                else:
                    layer.forward = previous
            sink.layout = None
        stray = [p for p in self.parameters if p.grad is not None]
        if stray:
            raise RuntimeError(
                f"grouped gradients: {len(stray)} parameters got an ordinary gradient (used "
                "outside their layer's forward); set train.task_grads=vmap"
            )


def describe_fallback(uncovered: list[str], fallback: str) -> str:
    """The log line of a model that grouped gradients do not fully cover."""
    return (
        "train.task_grads=grouped does not cover layer types "
        f"{', '.join(uncovered)}: using train.task_grads={fallback} instead"
    )
