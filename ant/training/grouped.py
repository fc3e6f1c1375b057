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
pass from the whole buffer (:func:`gram_matrix`): accumulating it layer by layer inside the
backward pass was measured slower on the CPU (27 ms against 7 ms a step for DiT-T/2, batch 100,
k = 5), and under DDP it has to follow the all-reduce anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ant.models.unet_blocks import GroupNorm32
from ant.training.task_grads import trainable

FormBuilder = Callable[[nn.Module, "Sink", Any], Callable[..., torch.Tensor]]
"""Builds the replacement forward of one layer instance for a sink and the layer's slots."""


@dataclass(frozen=True)
class GroupLayout:
    """How the samples of a batch form the k groups: contiguous runs of ``counts[i]`` samples.

    ``sample_group`` (``[B]``, int64, on the batch's device) is each sample's group. ``equal``
    layouts (every count the same) use batched products; others use one product per segment.
    """

    counts: tuple[int, ...]
    sample_group: torch.Tensor
    equal: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "equal", len(set(self.counts)) == 1)

    @property
    def k(self) -> int:
        """The number of groups."""
        return len(self.counts)

    @classmethod
    def chunks(cls, k: int, batch: int, device: torch.device) -> GroupLayout:
        """k equal contiguous chunks of ``batch // k`` samples (stratified sampling)."""
        group = torch.arange(batch, device=device) // (batch // k)
        return cls(counts=(batch // k,) * k, sample_group=group)

    @classmethod
    def sorted(cls, group: torch.Tensor, k: int) -> GroupLayout:
        """The layout of a batch already sorted by ``group`` (reads the k counts to the host)."""
        counts = torch.bincount(group, minlength=k).tolist()
        return cls(counts=tuple(int(c) for c in counts), sample_group=group)

    def segments(self) -> Iterator[tuple[int, int, int]]:
        """``(group, first sample, sample count)`` of every non-empty group."""
        first = 0
        for index, count in enumerate(self.counts):
            if count:
                yield index, first, count
            first += count


@dataclass
class Slot:
    """Where one parameter's k gradients live in the buffer: columns ``offset:offset+numel``."""

    index: int
    offset: int
    shape: torch.Size
    numel: int


class Sink:
    """One step's destination: the ``[k, P]`` buffer, the layout and which slots are written."""

    def __init__(self, buffer: torch.Tensor, slots: list[Slot]) -> None:
        self.buffer = buffer
        self.slots = slots
        k = buffer.shape[0]
        self.views = [
            buffer[:, slot.offset : slot.offset + slot.numel].view(k, *slot.shape) for slot in slots
        ]
        self.written = [False] * len(slots)
        self.layout: GroupLayout | None = None

    def view(self, slot: Slot) -> torch.Tensor:
        """The ``[k, *shape]`` view of ``slot`` in the buffer."""
        return self.views[slot.index]

    @property
    def groups(self) -> GroupLayout:
        """The layout of the batch now being back-propagated."""
        if self.layout is None:
            raise RuntimeError("grouped gradients: no batch layout set")
        return self.layout

    def fresh(self, slot: Slot) -> bool:
        """Whether ``slot`` has not been written yet in this step."""
        return not self.written[slot.index]

    def store(self, slot: Slot, value: torch.Tensor) -> None:
        """Write (or add, if already written) ``value`` ``[k, *shape]`` into ``slot``."""
        view = self.view(slot)
        if self.fresh(slot):
            view.copy_(value)
        else:
            view.add_(value)
        self.done(slot)

    def done(self, slot: Slot) -> None:
        """Mark ``slot`` written (later writes in this step add to it)."""
        self.written[slot.index] = True

    def finish(self) -> None:
        """Zero the slots of parameters that took no part in the step (their gradient is 0)."""
        for slot, written in zip(self.slots, self.written, strict=True):
            if not written:
                self.view(slot).zero_()
                self.written[slot.index] = True


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


def _no_autocast(device: torch.device) -> Any:
    """Autocast off (the backward multiplies in explicit dtypes), entered only if it is on."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


def _saved(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the dtype autocast computes the layer in (what an ordinary layer saves)."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind) and x.is_floating_point():
        return x.to(torch.get_autocast_dtype(kind))
    return x


def _group_products(sink: Sink, slot: Slot, grad: torch.Tensor, inputs: torch.Tensor) -> None:
    """Slot ``slot`` gets, per group, ``grad_c^T inputs_c`` over the rows of the group's samples.

    ``grad`` is ``[B, ..., out]`` and ``inputs`` ``[B, ..., in]``; the product is ``[out, in]``.
    """
    layout = sink.groups
    view = sink.view(slot)
    out_dim, in_dim = grad.shape[-1], inputs.shape[-1]
    exact = view.dtype == grad.dtype
    if layout.equal:
        gk = grad.reshape(layout.k, -1, out_dim).transpose(1, 2)
        xk = inputs.reshape(layout.k, -1, in_dim)
        if exact and sink.fresh(slot):
            torch.bmm(gk, xk, out=view)
        elif exact:
            view.baddbmm_(gk, xk)
        else:
            sink.store(slot, torch.bmm(gk, xk))
            return
        sink.done(slot)
        return
    fresh = sink.fresh(slot)
    if fresh:
        view.zero_()
    for group, first, count in layout.segments():
        g = grad.narrow(0, first, count).reshape(-1, out_dim)
        x = inputs.narrow(0, first, count).reshape(-1, in_dim)
        if exact:
            view[group].addmm_(g.T, x)
        else:
            view[group].add_(g.T @ x)
    sink.done(slot)


def _group_sums(sink: Sink, slot: Slot, per_sample: torch.Tensor) -> None:
    """Slot ``slot`` gets the sum of ``per_sample`` (``[B, *shape]``) over each group's samples."""
    layout = sink.groups
    if layout.equal:
        sink.store(slot, per_sample.reshape(layout.k, -1, *per_sample.shape[1:]).sum(1))
        return
    totals = torch.zeros(
        layout.k, *per_sample.shape[1:], dtype=per_sample.dtype, device=per_sample.device
    )
    sink.store(slot, totals.index_add_(0, layout.sample_group, per_sample))


def _bias_sums(sink: Sink, slot: Slot, grad: torch.Tensor) -> None:
    """Slot ``slot`` gets, per group, the sum of ``grad`` (``[B, ..., out]``) over all but the
    last dimension: the bias gradient of a Linear layer."""
    layout = sink.groups
    out_dim = grad.shape[-1]
    view = sink.view(slot)
    if layout.equal and sink.fresh(slot) and view.dtype == grad.dtype:
        torch.sum(grad.reshape(layout.k, -1, out_dim), dim=1, out=view)
        sink.done(slot)
        return
    _group_sums(sink, slot, grad.reshape(grad.shape[0], -1, out_dim).sum(1))


class _GroupedLinear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        sink: Sink,
        slots: tuple[Slot, Slot | None],
    ) -> torch.Tensor:
        ctx.save_for_backward(_saved(x), weight)
        ctx.sink, ctx.slots, ctx.x_dtype = sink, slots, x.dtype
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        sink: Sink = ctx.sink
        weight_slot, bias_slot = ctx.slots
        with _no_autocast(grad.device):
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = (grad @ weight.to(grad.dtype)).to(ctx.x_dtype)
            inputs = x.to(grad.dtype)
            if weight_slot is not None:
                _group_products(sink, weight_slot, grad, inputs)
            if bias_slot is not None:
                _bias_sums(sink, bias_slot, grad)
        return grad_x, None, None, None, None


class _GroupedConv(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        conv: nn.modules.conv._ConvNd,
        sink: Sink,
        slots: tuple[Slot | None, Slot | None],
    ) -> torch.Tensor:
        ctx.save_for_backward(_saved(x), weight)
        ctx.conv, ctx.sink, ctx.slots, ctx.x_dtype = conv, sink, slots, x.dtype
        ctx.has_bias = bias is not None
        return conv._conv_forward(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        conv: nn.modules.conv._ConvNd = ctx.conv
        sink: Sink = ctx.sink
        weight_slot, bias_slot = ctx.slots
        options = (
            list(conv.stride),
            list(conv.padding),
            list(conv.dilation),
            False,
            [0] * len(conv.stride),
            conv.groups,
        )
        bias_sizes = [weight.shape[0]] if ctx.has_bias else None
        with _no_autocast(grad.device):
            inputs, kernel = x.to(grad.dtype), weight.to(grad.dtype)
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = torch.ops.aten.convolution_backward(
                    grad, inputs, kernel, bias_sizes, *options, [True, False, False]
                )[0].to(ctx.x_dtype)
            layout = sink.groups
            slots = [(slot, index) for index, slot in enumerate(ctx.slots) if slot is not None]
            fresh = {slot.index: sink.fresh(slot) for slot, _ in slots}
            for slot, _ in slots:
                if fresh[slot.index] and 0 in layout.counts:
                    sink.view(slot).zero_()
            for group, first, count in layout.segments():
                pieces = torch.ops.aten.convolution_backward(
                    grad.narrow(0, first, count),
                    inputs.narrow(0, first, count),
                    kernel,
                    bias_sizes,
                    *options,
                    [False, weight_slot is not None, bias_slot is not None],
                )
                for slot, index in slots:
                    row = sink.view(slot)[group]
                    if fresh[slot.index]:
                        row.copy_(pieces[index + 1])
                    else:
                        row.add_(pieces[index + 1])
            for slot, _ in slots:
                sink.done(slot)
        return grad_x, None, None, None, None, None


class _GroupedEmbedding(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        indices: torch.Tensor,
        weight: torch.Tensor,
        padding_idx: int | None,
        sink: Sink,
        slot: Slot,
    ) -> torch.Tensor:
        ctx.save_for_backward(indices)
        ctx.padding_idx, ctx.sink, ctx.slot = padding_idx, sink, slot
        ctx.num_rows = weight.shape[0]
        return F.embedding(indices, weight, padding_idx)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, ...]:
        (indices,) = ctx.saved_tensors
        sink: Sink = ctx.sink
        layout = sink.groups
        groups = layout.sample_group.reshape(-1, *([1] * (indices.ndim - 1))).expand_as(indices)
        rows = grad.reshape(-1, grad.shape[-1])
        if ctx.padding_idx is not None:
            keep = (indices != ctx.padding_idx).reshape(-1, 1)
            rows = rows * keep
        table = torch.zeros(
            layout.k, ctx.num_rows, grad.shape[-1], dtype=grad.dtype, device=grad.device
        )
        table.index_put_((groups.reshape(-1), indices.reshape(-1)), rows, accumulate=True)
        sink.store(ctx.slot, table)
        return None, None, None, None, None


class _GroupedAffine(torch.autograd.Function):
    """``y = xhat * weight + bias`` over a channel layout given by ``view_shape``."""

    @staticmethod
    def forward(
        ctx: Any,
        xhat: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        view_shape: tuple[int, ...],
        channel_dims: tuple[int, ...],
        sink: Sink,
        slots: tuple[Slot | None, Slot | None],
    ) -> torch.Tensor:
        ctx.save_for_backward(xhat, weight)
        ctx.view_shape, ctx.channel_dims = view_shape, channel_dims
        ctx.sink, ctx.slots = sink, slots
        out = xhat
        if weight is not None:
            out = out * weight.reshape(view_shape)
        if bias is not None:
            out = out + bias.reshape(view_shape)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xhat, weight = ctx.saved_tensors
        sink: Sink = ctx.sink
        weight_slot, bias_slot = ctx.slots
        shape = ctx.view_shape
        summed = [d for d in range(1, grad.ndim) if d not in ctx.channel_dims]
        batch = grad.shape[0]
        with _no_autocast(grad.device):
            grad_x = grad if weight is None else grad * weight.reshape(shape)
            if weight_slot is not None:
                per = (grad * xhat).sum(dim=summed) if summed else grad * xhat
                _group_sums(sink, weight_slot, per.reshape(batch, *weight_slot.shape))
            if bias_slot is not None:
                per = grad.sum(dim=summed) if summed else grad
                _group_sums(sink, bias_slot, per.reshape(batch, *bias_slot.shape))
        return grad_x.to(xhat.dtype), None, None, None, None, None, None


def _linear(module: nn.Module, sink: Sink, slots: Any) -> Callable[..., torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _GroupedLinear.apply(x, module.weight, module.bias, sink, slots)
        return out

    return forward


def _conv(module: nn.Module, sink: Sink, slots: Any) -> Callable[..., torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _GroupedConv.apply(x, module.weight, module.bias, module, sink, slots)
        return out

    return forward


def _embedding(module: nn.Module, sink: Sink, slots: Any) -> Callable[..., torch.Tensor]:
    assert isinstance(module, nn.Embedding)

    def forward(indices: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _GroupedEmbedding.apply(
            indices, module.weight, module.padding_idx, sink, slots[0]
        )
        return out

    return forward


def _affine(
    xhat: torch.Tensor,
    module: nn.Module,
    view_shape: tuple[int, ...],
    channel_dims: tuple[int, ...],
    sink: Sink,
    slots: Any,
) -> torch.Tensor:
    out: torch.Tensor = _GroupedAffine.apply(
        xhat, module.weight, module.bias, view_shape, channel_dims, sink, slots
    )
    return out


def _group_norm(module: nn.Module, sink: Sink, slots: Any) -> Callable[..., torch.Tensor]:
    assert isinstance(module, nn.GroupNorm)

    def forward(x: torch.Tensor) -> torch.Tensor:
        xhat = F.group_norm(x, module.num_groups, None, None, module.eps)
        shape = (1, module.num_channels, *([1] * (x.ndim - 2)))
        return _affine(xhat, module, shape, (1,), sink, slots)

    return forward


def _group_norm32(module: nn.Module, sink: Sink, slots: Any) -> Callable[..., torch.Tensor]:
    plain = _group_norm(module, sink, slots)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return plain(x.float()).to(x.dtype)

    return forward


def _layer_norm(module: nn.Module, sink: Sink, slots: Any) -> Callable[..., torch.Tensor]:
    assert isinstance(module, nn.LayerNorm)

    def forward(x: torch.Tensor) -> torch.Tensor:
        shape = tuple(module.normalized_shape)
        xhat = F.layer_norm(x, shape, None, None, module.eps)
        view = (1,) * (x.ndim - len(shape)) + shape
        channels = tuple(range(x.ndim - len(shape), x.ndim))
        return _affine(xhat, module, view, channels, sink, slots)

    return forward


def _conv_supported(module: nn.Module) -> bool:
    assert isinstance(module, nn.modules.conv._ConvNd)
    return module.padding_mode == "zeros" and not isinstance(module.padding, str)


def _embedding_supported(module: nn.Module) -> bool:
    assert isinstance(module, nn.Embedding)
    return module.max_norm is None and not module.scale_grad_by_freq and not module.sparse


FORMS: dict[type[nn.Module], tuple[FormBuilder, Any]] = {
    nn.Linear: (_linear, None),
    nn.Conv1d: (_conv, _conv_supported),
    nn.Conv2d: (_conv, _conv_supported),
    nn.Conv3d: (_conv, _conv_supported),
    nn.Embedding: (_embedding, _embedding_supported),
    nn.GroupNorm: (_group_norm, None),
    GroupNorm32: (_group_norm32, None),
    nn.LayerNorm: (_layer_norm, None),
}
"""Grouped forms by exact layer type: a builder of the replacement forward, and a check of the
instance's options (``None``: every instance is supported). A subclass that does not override
``forward`` uses its base class's form."""


def _form(module: nn.Module) -> FormBuilder | None:
    kind = type(module)
    for base in kind.__mro__:
        if base in FORMS:
            if kind.forward is not getattr(base, "forward", None):
                return None
            build, supported = FORMS[base]
            return build if supported is None or supported(module) else None
    return None


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
            build = _form(layer)
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
