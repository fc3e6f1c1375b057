"""ADM: the U-Net of Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis" (NeurIPS
2021, arXiv:2105.05233), the "ablated diffusion model" of its Sec. 3.

The network is the DDPM U-Net (Ho et al. 2020) with the paper's architecture changes (Sec. 3,
Tables 1-2): residual blocks with group normalisation at every resolution, self-attention at
several resolutions with a fixed number of channels per head (64 in the paper), BigGAN residual
blocks for up- and downsampling, and adaptive group normalisation (AdaGN, Sec. 3.1) injecting
the timestep and class embedding into every residual block.

Layout, for ``channel_mult = (m_0, .., m_{L-1})`` and width ``C = model_channels``:

* embedding: sinusoidal features of t (``C`` of them) -> Linear(C, 4C) -> SiLU -> Linear(4C, 4C);
  plus a learned class embedding of width 4C in a class-conditional model;
* encoder: a 3×3 convolution to ``m_0·C`` channels, then per level ``num_res_blocks`` residual
  blocks to ``m_l·C`` channels (each followed by attention if the level's resolution is in
  ``attention_resolutions``) and, except at the last level, a downsampling step;
* middle: residual block, attention, residual block;
* decoder: per level, from the last, ``num_res_blocks + 1`` residual blocks, each taking the
  concatenation of the features and one encoder skip, with attention where the encoder had it and
  an upsampling step closing every level but the first;
* output: GroupNorm, SiLU and a zero-initialised 3×3 convolution to ``C_out`` channels.

The residual-branch convolutions, attention projections and the output convolution start at zero,
so the network is the zero function at initialisation (as in the reference code). With
``learn_sigma`` the output has ``2·in_channels`` channels: ε, then the interpolation v of the
learned variance (Nichol & Dhariwal 2021), the convention of :class:`~ant.models.dit.DiT`.

The call signature and attributes are DiT's (``forward(x, t, y)``, ``in_channels``,
``input_size``, ``num_classes``, ``null_label``, ``forward_with_cfg``), so trainer, samplers,
classifier-free guidance, EMA, checkpoints and the per-cluster ``vmap`` gradients take it as is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ant.diffusion.guidance import guide_doubled_batch
from ant.models.embeddings import LabelEmbedder, timestep_frequency_embedding
from ant.models.unet_blocks import (
    AttentionBlock,
    Downsample,
    EmbedSequential,
    GroupNorm32,
    ResBlock,
    Upsample,
    conv3x3,
    zero_,
)

__all__ = ["ADMUNet", "default_channel_mult"]

# ADM's channel multipliers by image size (its code's defaults), and improved DDPM's for 32 px.
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
}


def default_channel_mult(input_size: int) -> tuple[float, ...]:
    """The channel multipliers ADM uses at ``input_size`` (512, 256, 128, 64; 32 as in improved
    DDPM); ``ValueError`` for other sizes."""
    try:
        return DEFAULT_CHANNEL_MULT[input_size]
    except KeyError:
        sizes = ", ".join(str(s) for s in sorted(DEFAULT_CHANNEL_MULT))
        raise ValueError(
            f"no default channel_mult for input_size {input_size} (ADM defines {sizes}): "
            "set channel_mult"
        ) from None


class ADMUNet(nn.Module):
    """The ADM U-Net (Dhariwal & Nichol 2021, Sec. 3) with DiT's interface.

    Args:
        input_size: height and width of the (square) input; must be divisible by
            ``2 ** (len(channel_mult) - 1)``.
        in_channels: channels C of the input.
        model_channels: base width; level l has ``channel_mult[l] * model_channels`` channels
            and the embedding ``4 * model_channels``.
        channel_mult: width multiplier per resolution level (one level per entry, each but the
            last followed by a 2× downsampling). ``None``: ADM's choice for ``input_size``.
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
        attention_resolutions: feature-map sizes (in pixels, e.g. ``(32, 16, 8)``) at which
            self-attention follows each residual block; sizes the network never reaches are
            ignored. The middle block always has attention.
        num_head_channels: channels per attention head (64 in the paper); ``-1`` uses a fixed
            ``num_heads`` instead.
        num_heads: heads of every attention block when ``num_head_channels == -1``.
        dropout: dropout rate inside the residual blocks.
        resblock_updown: resample with residual blocks (BigGAN-style) rather than a strided /
            nearest-neighbour convolution.
        use_scale_shift_norm: condition with AdaGN (scale and shift of the group norm) rather
            than adding the embedding.
        class_dropout: probability of replacing a label by the null label ∅ in training
            (classifier-free guidance); 0 builds no null label.
        num_classes: number of classes; 0 builds an unconditional model (``y`` is ignored).
        learn_sigma: also predict the variance interpolation v, doubling the output channels.
    """

    def __init__(
        self,
        input_size: int = 64,
        in_channels: int = 3,
        model_channels: int = 128,
        channel_mult: Sequence[float] | None = None,
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (32, 16, 8),
        num_head_channels: int = 64,
        num_heads: int = 4,
        dropout: float = 0.0,
        resblock_updown: bool = True,
        use_scale_shift_norm: bool = True,
        class_dropout: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
    ) -> None:
        super().__init__()
        mult = tuple(channel_mult) if channel_mult is not None else None
        mult = mult or default_channel_mult(input_size)
        _check_options(
            input_size, in_channels, model_channels, mult, num_res_blocks, num_classes, dropout
        )
        if num_head_channels == -1 and num_heads < 1:
            raise ValueError(f"num_heads must be >= 1 with num_head_channels -1, got {num_heads}")
        if num_head_channels != -1 and num_head_channels < 1:
            raise ValueError(f"num_head_channels must be >= 1 or -1, got {num_head_channels}")
        self.input_size = input_size
        self.in_channels = in_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.learn_sigma = learn_sigma
        self.num_classes = num_classes
        self.model_channels = model_channels
        self.channel_mult = mult
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = tuple(int(r) for r in attention_resolutions)
        self.num_head_channels = num_head_channels
        self.num_heads = num_heads

        emb = 4 * model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb)
        )
        self.label_embed = (
            LabelEmbedder(num_classes, emb, class_dropout) if num_classes > 0 else None
        )

        def block(channels: int, out: int, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(channels, emb, dropout, out, use_scale_shift_norm, up=up, down=down)

        widths = [int(m * model_channels) for m in mult]
        ch = widths[0]
        self.input_blocks = nn.ModuleList([EmbedSequential(conv3x3(in_channels, ch))])
        skips = [ch]
        resolution = input_size
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [block(ch, width)]
                ch = width
                if resolution in self.attention_resolutions:
                    layers.append(self._attention(ch))
                self.input_blocks.append(EmbedSequential(*layers))
                skips.append(ch)
            if level != len(widths) - 1:
                down = block(ch, ch, down=True) if resblock_updown else Downsample(ch)
                self.input_blocks.append(EmbedSequential(down))
                skips.append(ch)
                resolution //= 2
        self.middle_block = EmbedSequential(block(ch, ch), self._attention(ch), block(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for i in range(num_res_blocks + 1):
                layers = [block(ch + skips.pop(), width)]
                ch = width
                if resolution in self.attention_resolutions:
                    layers.append(self._attention(ch))
                if level and i == num_res_blocks:
                    layers.append(block(ch, ch, up=True) if resblock_updown else Upsample(ch))
                    resolution *= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), zero_(conv3x3(ch, self.out_channels)))

    def _attention(self, channels: int) -> AttentionBlock:
        if self.num_head_channels == -1:
            return AttentionBlock(channels, self.num_heads)
        if channels % self.num_head_channels:
            raise ValueError(
                f"num_head_channels {self.num_head_channels} does not divide the {channels} "
                "channels of an attention block"
            )
        return AttentionBlock(channels, channels // self.num_head_channels)

    @property
    def null_label(self) -> int | None:
        """The label index of ∅ for classifier-free guidance, or ``None`` if there is none."""
        return self.label_embed.null_label if self.label_embed is not None else None

    def embed(self, t: torch.Tensor, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The conditioning embedding [B, 4C]: timestep MLP plus the class embedding."""
        if t.ndim == 0:
            t = t.expand(batch)
        features = timestep_frequency_embedding(t, self.model_channels)
        dtype = next(self.time_embed.parameters()).dtype
        emb: torch.Tensor = self.time_embed(features.to(dtype))
        if self.label_embed is not None:
            if y is None:
                null = self.null_label
                if null is None:
                    raise ValueError("this ADM has no null label (class_dropout=0): pass labels y")
                y = torch.full((batch,), null, dtype=torch.long, device=emb.device)
            emb = emb + self.label_embed(y)
        return emb

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict the noise (and variance interpolation) of ``x``.

        Args:
            x: noisy inputs [B, C, H, W].
            t: timesteps [B], integer or float (a 0-d tensor is broadcast to the batch).
            y: class labels [B] int64; index :attr:`null_label` is ∅. ``None`` in a
                class-conditional model means ∅ for the whole batch. Ignored by an
                unconditional model (``num_classes=0``).

        Returns:
            [B, out_channels, H, W]: ε in the first ``in_channels`` channels, then v if
            ``learn_sigma``.
        """
        emb = self.embed(t, y, x.shape[0])
        h = x
        skips = []
        for module in self.input_blocks:
            h = module(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, skips.pop()], dim=1), emb)
        out: torch.Tensor = self.out(h)
        return out

    def forward_with_cfg(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float
    ) -> torch.Tensor:
        """Classifier-free guided prediction (Ho & Salimans 2022), as
        :meth:`ant.models.dit.DiT.forward_with_cfg`.

        The caller doubles the batch: the second half of ``y`` carries :attr:`null_label`, and
        only the first half of ``x`` is read. The guided noise ``ε_∅ + s (ε_c - ε_∅)`` covers all
        ``in_channels`` channels; the variance channels are the conditional half's. Both halves
        of the result equal the guided prediction. Call it in eval mode.
        """
        if self.null_label is None:
            raise ValueError("classifier-free guidance needs an ADM with a null label")
        return guide_doubled_batch(self.forward, x, t, y, cfg_scale, self.in_channels)


def _check_options(
    input_size: int,
    in_channels: int,
    model_channels: int,
    channel_mult: tuple[float, ...],
    num_res_blocks: int,
    num_classes: int,
    dropout: float,
) -> None:
    """One-line ``ValueError`` for an impossible architecture."""
    if in_channels < 1 or input_size < 1:
        raise ValueError(
            f"ADM needs input_size and in_channels >= 1, got {input_size}, {in_channels}"
        )
    if model_channels < 2 or model_channels % 2:
        raise ValueError(f"ADM model_channels must be even and >= 2, got {model_channels}")
    if not channel_mult or any(m <= 0 for m in channel_mult):
        raise ValueError(f"ADM channel_mult must be positive numbers, got {list(channel_mult)}")
    factor = 2 ** (len(channel_mult) - 1)
    if input_size % factor:
        raise ValueError(
            f"ADM input_size {input_size} must be divisible by {factor} "
            f"({len(channel_mult)} levels in channel_mult)"
        )
    if num_res_blocks < 1:
        raise ValueError(f"ADM num_res_blocks must be >= 1, got {num_res_blocks}")
    if num_classes < 0:
        raise ValueError(f"ADM num_classes must be >= 0, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"ADM dropout must lie in [0, 1), got {dropout}")
