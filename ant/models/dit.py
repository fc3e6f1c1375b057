"""DiT: the Diffusion Transformer of Peebles & Xie, "Scalable Diffusion Models with Transformers"
(ICCV 2023, arXiv:2212.09748), built from timm layers.

The input latent [B, C, H, W] is cut into p×p patches, linearly embedded and summed with a fixed
2-D sin-cos positional embedding (paper Sec. 3.2, "Patchify"). The tokens go through ``depth``
transformer blocks with *adaLN-Zero* conditioning on ``c = t_emb + y_emb``, then a final
adaptive LayerNorm and a linear decoder to p·p·C_out values per token, rearranged back to
[B, C_out, H, W]. With ``learn_sigma`` the model predicts the noise ε and the interpolation
coefficients v of the learned variance Σ = exp(v log β + (1 - v) log β̃) (Nichol & Dhariwal 2021),
so C_out = 2C.

Module attribute names follow the reference implementation, so its state dicts (such as the
published DiT-XL/2 checkpoints) load unchanged.
"""

from __future__ import annotations

import torch
from timm.layers import Mlp, PatchEmbed
from timm.models.vision_transformer import Attention
from torch import nn

from ant.diffusion.guidance import guide_doubled_batch
from ant.models.embeddings import LabelEmbedder, TimestepEmbedder, sincos_pos_embed_2d
from ant.models.routing import RoutingSpec, TaskRouting, route

__all__ = ["DiT", "DiTBlock", "FinalLayer", "modulate"]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive layer-norm modulation ``x * (1 + scale) + shift`` (paper Sec. 3.2, adaLN).

    ``x`` is [B, N, D] (already normalised); ``shift`` and ``scale`` are the per-sample
    β and γ - 1 regressed from the conditioning, [B, D], broadcast over the N tokens. Writing
    γ = 1 + scale makes a zero regression the identity.
    """
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TanhGELU(nn.GELU):
    """GELU with the tanh approximation, the activation of the DiT MLP."""

    def __init__(self) -> None:
        super().__init__(approximate="tanh")


class DiTBlock(nn.Module):
    """A transformer block with adaLN-Zero conditioning (paper Sec. 3.2, Fig. 3).

    From the conditioning c an MLP regresses six vectors: (β₁, γ₁, α₁) for the attention
    branch and (β₂, γ₂, α₂) for the MLP branch, and the block computes::

        x = x + α₁ · Attn(γ₁ · LN(x) + β₁)
        x = x + α₂ · MLP(γ₂ · LN(x) + β₂)

    The regression is zero-initialised (:meth:`DiT.initialize_weights`), so every gate α is 0
    and the block starts as the identity. The LayerNorms have no affine parameters of their own.
    Attention is timm's multi-head self-attention, run through
    ``torch.nn.functional.scaled_dot_product_attention``.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        # Fused SDPA attention whatever timm's global setting (TIMM_FUSED_ATTN, exportable mode).
        self.attn.fused_attn = True  # type: ignore[misc]
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=TanhGELU)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Tokens [B, N, D] and conditioning [B, D] -> tokens [B, N, D]."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(6, dim=-1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """Adaptive LayerNorm then a linear decoder of each token to a p×p×C_out patch (Sec. 3.2,
    "Transformer decoder"); the modulation and the decoder are zero-initialised."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Tokens [B, N, D] and conditioning [B, D] -> per-token patches [B, N, p·p·C_out]."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Diffusion Transformer with adaLN-Zero blocks (Peebles & Xie 2023).

    Args:
        input_size: height and width of the (square) input, e.g. 32 for the 32×32×4 latents of
            256×256 images.
        patch_size: side p of the square patches; the sequence has (input_size / p)² tokens.
        in_channels: channels C of the input.
        hidden_size: token width D.
        depth: number of DiT blocks.
        num_heads: attention heads (must divide ``hidden_size``).
        mlp_ratio: MLP hidden width over D.
        class_dropout: probability of replacing a label by the null label ∅ in training
            (classifier-free guidance); 0 builds no null label.
        num_classes: number of classes; 0 builds an unconditional model (no label embedding,
            ``y`` is ignored).
        learn_sigma: also predict the variance interpolation v, doubling the output channels.
        freq_shift: the timestep frequencies are ``10000^(-k / (128 - freq_shift))``: 0 is the
            paper's; 1 is diffusers' ``DiTTransformer2DModel``, whose export is then exact
            (docs/export.md).
        routing: Denoising Task Routing (:mod:`ant.models.routing`): every block sees only the
            channels of its timestep's mask, the others are carried past it; the final layer is
            not routed.
            ``None`` (default) routes nothing.
    """

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        freq_shift: float = 0.0,
        routing: RoutingSpec | None = None,
    ) -> None:
        super().__init__()
        if patch_size < 1 or input_size < 1 or input_size % patch_size:
            raise ValueError(
                f"DiT input_size {input_size} must be a positive multiple of patch_size "
                f"{patch_size}"
            )
        if hidden_size % num_heads:
            raise ValueError(
                f"DiT hidden_size {hidden_size} must be divisible by num_heads {num_heads}"
            )
        if hidden_size % 4:
            raise ValueError(f"DiT hidden_size {hidden_size} must be a multiple of 4 (2-D sin-cos)")
        if num_classes < 0:
            raise ValueError(f"DiT num_classes must be >= 0, got {num_classes}")
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.learn_sigma = learn_sigma
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.grid_size = input_size // patch_size

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size, shift=freq_shift)
        self.y_embedder = (
            LabelEmbedder(num_classes, hidden_size, class_dropout) if num_classes > 0 else None
        )
        self.pos_embed = nn.Parameter(
            sincos_pos_embed_2d(hidden_size, self.grid_size).unsqueeze(0), requires_grad=False
        )
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.routing = TaskRouting(routing, hidden_size) if routing is not None else None
        self.initialize_weights()

    @property
    def null_label(self) -> int | None:
        """The label index of ∅ for classifier-free guidance, or ``None`` if there is none."""
        return self.y_embedder.null_label if self.y_embedder is not None else None

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """The DiT initialisation: Xavier-uniform linear layers and patch projection, N(0, 0.02)
        label and timestep embeddings, and zeros for every adaLN regression and the final
        decoder (adaLN-Zero, paper Sec. 3.2), so the network starts as the zero function with
        identity blocks."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        proj = self.x_embedder.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        if proj.bias is not None:
            nn.init.zeros_(proj.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for layer in self.t_embedder.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)
        for module in self.modules():
            if isinstance(module, (DiTBlock, FinalLayer)):
                for param in module.adaLN_modulation.parameters():
                    nn.init.zeros_(param)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token patches [B, N, p·p·C_out] -> images [B, C_out, H, W]."""
        g, p, c = self.grid_size, self.patch_size, self.out_channels
        x = x.reshape(x.shape[0], g, g, p, p, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(x.shape[0], c, g * p, g * p)

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
        batch = x.shape[0]
        if t.ndim == 0:
            t = t.expand(batch)
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t)
        if self.y_embedder is not None:
            if y is None:
                null = self.null_label
                if null is None:
                    raise ValueError("this DiT has no null label (class_dropout=0): pass labels y")
                y = torch.full((batch,), null, dtype=torch.long, device=x.device)
            c = c + self.y_embedder(y)
        if self.routing is None:
            for block in self.blocks:
                h = block(h, c)
        else:
            mask = self.routing(t)
            for block in self.blocks:
                h = route(h, mask, block, c)
        return self.unpatchify(self.final_layer(h, c))

    def forward_with_cfg(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float
    ) -> torch.Tensor:
        """Classifier-free guided prediction (paper Sec. 3.1; Ho & Salimans 2022).

        The batch is doubled by the caller: its second half carries the null label
        (``y[B/2:] = null_label``), and only the first half of ``x`` is read (it is fed to both
        halves). With ε_c and ε_∅ the conditional and unconditional noise predictions, the
        guided noise is

            ε̂ = ε_∅ + s · (ε_c - ε_∅),

        applied to *all* ``in_channels`` channels of ε. (The reference DiT code guides only the
        first 3 channels of its 4-channel latents, a known quirk; this implementation does not
        reproduce it.) The variance channels, if any, are those of the conditional half.

        Returns:
            [B, out_channels, H, W], with both halves equal to the guided prediction, so that a
            sampler can step the doubled batch as is. Call it in eval mode: in training mode the
            labels of the first half are also dropped at random.
        """
        if self.null_label is None:
            raise ValueError("classifier-free guidance needs a DiT with a null label")
        return guide_doubled_batch(self.forward, x, t, y, cfg_scale, self.in_channels)
