"""Embeddings of the DiT conditioning and token positions (Peebles & Xie 2023, Sec. 3.2).

* :func:`timestep_frequency_embedding`: the sinusoidal features of a (possibly fractional)
  timestep, as in the Transformer positional encoding (Vaswani et al. 2017).
* :class:`TimestepEmbedder`: those features followed by a 2-layer SiLU MLP.
* :class:`LabelEmbedder`: a class-embedding table with an extra *null* row for classifier-free
  guidance, and the label dropout that trains it (Ho & Salimans 2022).
* :func:`sincos_pos_embed_2d`: the fixed 2-D sine-cosine positional embedding of the patch tokens
  used by DiT and MAE (He et al. 2022).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_frequency_embedding(
    t: torch.Tensor, dim: int = 256, max_period: float = 10_000.0, shift: float = 0.0
) -> torch.Tensor:
    """Sinusoidal features of the timesteps ``t`` ([B], int or float) -> [B, dim] float32.

    With ``half = dim / 2`` and frequencies ``w_k = max_period^(-k / (half - shift))`` for
    ``k = 0 .. half-1``, the features are ``[cos(t w_0) .. cos(t w_{half-1}),
    sin(t w_0) .. sin(t w_{half-1})]``. ``shift = 0`` is DiT's and ADM's embedding; diffusers'
    ``DiTTransformer2DModel`` fixes ``shift = 1`` (its ``downscale_freq_shift``).
    """
    if dim % 2:
        raise ValueError(f"the timestep frequency dimension must be even, got {dim}")
    half = dim // 2
    # In the order DiT's and diffusers' code compute it, so the float32 roundings agree too.
    steps = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * steps / (half - shift))
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Embed scalar timesteps: sinusoidal features then Linear-SiLU-Linear (DiT Sec. 3.2)."""

    def __init__(self, hidden_size: int, frequency_dim: int = 256, shift: float = 0.0) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.shift = shift
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Timesteps [B] -> embeddings [B, hidden_size]."""
        features = timestep_frequency_embedding(t, self.frequency_dim, shift=self.shift)
        return self.mlp(features.to(next(self.mlp.parameters()).dtype))


class LabelEmbedder(nn.Module):
    """Class-label embedding with label dropout for classifier-free guidance.

    When ``dropout_prob > 0`` the table has ``num_classes + 1`` rows: the last one, index
    ``num_classes`` (:attr:`null_label`), embeds the *null* label ∅ of the unconditional model
    ε(x, ∅). In training mode each label is replaced by ∅ with probability ``dropout_prob``
    (Ho & Salimans 2022; DiT Sec. 3.1, "Classifier-free guidance"); ``force_drop_ids`` drops an
    explicit set of labels in any mode.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"a label embedder needs at least one class, got {num_classes}")
        if not 0.0 <= dropout_prob <= 1.0:
            raise ValueError(f"class dropout must lie in [0, 1], got {dropout_prob}")
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    @property
    def null_label(self) -> int | None:
        """The index of the null label ∅, or ``None`` when the table has no null row."""
        return self.num_classes if self.dropout_prob > 0 else None

    def drop_labels(
        self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Replace labels by :attr:`null_label`: where ``force_drop_ids`` is true (or 1) if given,
        else at random with probability ``dropout_prob``."""
        if self.null_label is None:
            raise ValueError("labels cannot be dropped: the embedder has no null label")
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids.to(device=labels.device, dtype=torch.bool)
        return torch.where(drop, torch.full_like(labels, self.null_label), labels)

    def forward(
        self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Labels [B] int64 -> embeddings [B, hidden_size], after dropout in training mode."""
        if force_drop_ids is not None or (self.training and self.dropout_prob > 0):
            labels = self.drop_labels(labels, force_drop_ids)
        return self.embedding_table(labels)


def sincos_embed_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """1-D sine-cosine embedding of ``positions`` [M] -> [M, embed_dim].

    With ``w_k = 10000^(-k / (embed_dim / 2))``, row m is ``[sin(p_m w_k)]_k ++ [cos(p_m w_k)]_k``.
    """
    if embed_dim % 2:
        raise ValueError(f"the 1-D sin-cos embedding dimension must be even, got {embed_dim}")
    half = embed_dim // 2
    omega = 1.0 / 10_000.0 ** (torch.arange(half, dtype=torch.float32) / half)
    args = positions.to(torch.float32)[:, None] * omega[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positional embedding of a square token grid (DiT Sec. 3.2, MAE).

    Returns [grid_size², embed_dim] float32, tokens in row-major order. The token at row ``i`` and
    column ``j`` gets ``[sincos_1d(j), sincos_1d(i)]``, each half of width ``embed_dim / 2``: the
    first half encodes the column, the second the row (the layout of the DiT and MAE tables, so
    DiT checkpoints load unchanged).
    """
    if embed_dim % 4:
        raise ValueError(
            f"the 2-D sin-cos embedding dimension must be a multiple of 4, got {embed_dim}"
        )
    coords = torch.arange(grid_size, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    emb_cols = sincos_embed_1d(embed_dim // 2, cols.reshape(-1))
    emb_rows = sincos_embed_1d(embed_dim // 2, rows.reshape(-1))
    return torch.cat([emb_cols, emb_rows], dim=1)
