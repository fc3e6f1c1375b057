"""The grouped forms of the layer types: autograd Functions that write per-cluster weight
gradients into a :class:`Sink` (the maths is in :mod:`ant.training.grouped`).

Each form replaces one layer instance's forward while :class:`~ant.training.grouped.GroupedGrads`
captures a step. It returns the input gradient as usual and ``None`` for its weight and bias,
and writes cluster c's weight gradient ``g_c^T x_c`` (Linear; the unfolded product for
convolutions, index sums for embeddings, the normalised input times the output gradient for
the affine weights of GroupNorm and LayerNorm) into its slot of the ``[k, P]`` buffer, per
segment of the batch's :class:`GroupLayout`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ant.models.unet_blocks import GroupNorm32

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


def layer_form(module: nn.Module) -> FormBuilder | None:
    """The grouped form of ``module``, or ``None`` if none covers it (or its options)."""
    kind = type(module)
    for base in kind.__mro__:
        if base in FORMS:
            if kind.forward is not getattr(base, "forward", None):
                return None
            build, supported = FORMS[base]
            return build if supported is None or supported(module) else None
    return None
