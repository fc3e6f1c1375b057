"""Building blocks of the ADM U-Net (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image
Synthesis", NeurIPS 2021, arXiv:2105.05233).

* :class:`GroupNorm32`: 32-group normalisation computed in float32 (the normalisation of every
  block, kept in full precision under mixed precision as in the reference code).
* :class:`ResBlock`: the residual block of the paper's Sec. 3, conditioned on the timestep (and
  class) embedding by adding it, or through *adaptive group normalisation* (AdaGN, Sec. 3.1),
  and optionally resampling inside the block as in BigGAN (Brock et al. 2019; Sec. 3,
  "BigGAN residual blocks for up and downsampling").
* :class:`AttentionBlock`: global multi-head self-attention over the pixels of a feature map
  (Sec. 3: attention at several resolutions, a fixed number of channels per head).
* :class:`Downsample`, :class:`Upsample`: the plain resamplers between resolutions when the
  residual blocks do not resample themselves.
* :class:`EmbedSequential`: a sequence of blocks that hands the embedding to those that take it.

Everything here is functional in its inputs (no in-place updates of inputs, no branching on tensor
values), so the blocks run under ``torch.func.functional_call`` and ``vmap`` for the per-cluster
gradients of :mod:`ant.training.task_grads`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AttentionBlock",
    "Downsample",
    "EmbedSequential",
    "GroupNorm32",
    "ResBlock",
    "Upsample",
    "conv3x3",
    "zero_",
]

NORM_GROUPS = 32


def zero_(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it.

    ADM zero-initialises the last convolution of each residual branch, the output projection of
    each attention block and the output convolution of the network, so every block starts as the
    identity and the network as the zero function.
    """
    with torch.no_grad():
        for param in module.parameters():
            param.zero_()
    return module


class GroupNorm32(nn.GroupNorm):
    """``GroupNorm(32, channels)`` evaluated in float32 and cast back to the input's dtype."""

    def __init__(self, channels: int) -> None:
        if channels % NORM_GROUPS:
            raise ValueError(
                f"ADM blocks normalise with {NORM_GROUPS} groups: {channels} channels is not a "
                f"multiple of {NORM_GROUPS} (raise model_channels or change channel_mult)"
            )
        super().__init__(NORM_GROUPS, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` [B, C, ...] in float32; the result has ``x``'s dtype."""
        return super().forward(x.float()).to(x.dtype)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 3×3 convolution that keeps the spatial size (or halves it with ``stride=2``)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def _downsample(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=2, stride=2)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling then a 3×3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, 2H, 2W]."""
        return self.conv(_upsample(x))


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3×3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, H/2, W/2]."""
        return self.conv(x)


class ResBlock(nn.Module):
    """The ADM residual block, conditioned on an embedding (paper Sec. 3 and 3.1).

    With ``h = Conv(SiLU(GN(x)))`` and ``e`` a linear projection of ``SiLU(emb)``:

    * ``use_scale_shift_norm`` (AdaGN, Sec. 3.1): ``e = (s, b)`` and the second half is
      ``Conv(Dropout(SiLU((1 + s) · GN(h) + b)))``, i.e. ``AdaGN(h, y) = y_s GroupNorm(h) + y_b``
      with ``y_s = 1 + s``, so a zero projection is plain group normalisation;
    * otherwise the embedding is added: ``Conv(Dropout(SiLU(GN(h + e))))`` (the DDPM block).

    The output is ``skip(x) + branch``, where ``skip`` is the identity when the channel count does
    not change and a 1×1 convolution when it does. The last convolution of the branch is
    zero-initialised, so the block starts as ``skip``. With ``up`` or ``down`` the block also
    resamples (BigGAN-style): nearest-neighbour upsampling or 2×2 average pooling is applied to
    both the branch (after its first normalisation and activation) and the skip path.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("a residual block resamples up or down, not both")
        out_channels = out_channels or channels
        self.channels = channels
        self.out_channels = out_channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.up = up
        self.down = down
        self.in_norm = GroupNorm32(channels)
        self.in_conv = conv3x3(channels, out_channels)
        self.emb_proj = nn.Linear(
            emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels
        )
        self.out_norm = GroupNorm32(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_(conv3x3(out_channels, out_channels))
        self.skip: nn.Module = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return _upsample(x)
        if self.down:
            return _downsample(x)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Features [B, C, H, W] and embedding [B, E] -> [B, C_out, H', W']."""
        h = F.silu(self.in_norm(x))
        h = self.in_conv(self._resample(h))
        x = self._resample(x)
        e = self.emb_proj(F.silu(emb)).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + e)
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H·W positions of a feature map (paper Sec. 3).

    ``x + Proj(Attention(QKV(GN(x))))`` with ``heads`` heads of width ``C / heads``; the output
    projection is zero-initialised, so the block starts as the identity. The projections act on
    each position's channels (1×1 convolutions in the paper's code, linear layers here: the same
    parameters). The channels of the QKV projection are laid out as ``[q | k | v]``, each split
    into heads.

    ``fused_attn`` selects ``torch.nn.functional.scaled_dot_product_attention`` (default) or the
    explicit ``softmax(q kᵀ / sqrt(d)) v``; both compute the same function. The explicit form is
    the one that batches under ``vmap``: :func:`ant.training.task_grads.unfused_attention` turns it
    on for the per-cluster gradients, as for timm's attention in DiT.
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(
                f"attention over {channels} channels cannot be split into {heads} heads"
            )
        self.channels = channels
        self.heads = heads
        self.fused_attn = True
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, H, W]."""
        batch, channels, height, width = x.shape
        tokens = self.norm(x).reshape(batch, channels, height * width).transpose(1, 2)
        q, k, v = (
            part.reshape(batch, height * width, self.heads, channels // self.heads).transpose(1, 2)
            for part in self.qkv(tokens).chunk(3, dim=-1)
        )
        if self.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
            out = scores.float().softmax(dim=-1).to(v.dtype) @ v
        out = self.proj(out.transpose(1, 2).reshape(batch, height * width, channels))
        return x + out.transpose(1, 2).reshape(batch, channels, height, width)


class EmbedSequential(nn.Sequential):
    """Blocks applied in order; residual blocks also receive the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Features [B, C, H, W] and embedding [B, E] through every block."""
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x
