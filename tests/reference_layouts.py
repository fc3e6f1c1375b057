"""Independent re-implementations of the two published checkpoint layouts, written from the
papers and the structure of their released code (plain torch, no timm, no ant): the DiT of
facebookresearch/DiT and the ADM U-Net of openai/guided-diffusion, with those projects' module
names, so their ``state_dict()`` has the keys and shapes of the released checkpoints. Tests save
one, load it into ant with ``model.init_from`` and compare outputs on the same input."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def frequency_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


# --- DiT (Peebles & Xie 2023) -------------------------------------------------------------


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def dit_pos_embed(dim: int, grid: int) -> np.ndarray:
    """The reference's 2-D table: a meshgrid of (w, h) whose first half encodes grid[0]."""
    mesh = np.stack(
        np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    )
    mesh = mesh.reshape(2, 1, grid, grid)
    return np.concatenate([_sincos_1d(dim // 2, mesh[0]), _sincos_1d(dim // 2, mesh[1])], axis=1)


class RefAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class RefDiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = RefAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = RefMlp(dim, 4 * dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s1, g1, a1, s2, g2, a2 = self.adaLN_modulation(c).unsqueeze(1).chunk(6, dim=-1)
        x = x + a1 * self.attn(self.norm1(x) * (1 + g1) + s1)
        return x + a2 * self.mlp(self.norm2(x) * (1 + g2) + s2)


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _TimeEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(frequency_features(t, 256))


class _LabelEmbed(nn.Module):
    def __init__(self, classes: int, dim: int, cfg: bool) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(classes + int(cfg), dim)


class _Final(nn.Module):
    def __init__(self, dim: int, patch: int, out: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch * patch * out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class RefDiT(nn.Module):
    """facebookresearch/DiT's ``DiT`` (class dropout > 0: a null-class row)."""

    def __init__(
        self,
        input_size: int,
        patch: int,
        channels: int,
        dim: int,
        depth: int,
        heads: int,
        classes: int,
        learn_sigma: bool = True,
    ) -> None:
        super().__init__()
        self.patch, self.out = patch, channels * (2 if learn_sigma else 1)
        self.x_embedder = _PatchEmbed(patch, channels, dim)
        self.t_embedder = _TimeEmbed(dim)
        self.y_embedder = _LabelEmbed(classes, dim, cfg=True)
        grid = input_size // patch
        table = torch.from_numpy(dit_pos_embed(dim, grid)).float().unsqueeze(0)
        self.pos_embed = nn.Parameter(table, requires_grad=False)
        self.blocks = nn.ModuleList(RefDiTBlock(dim, heads) for _ in range(depth))
        self.final_layer = _Final(dim, patch, self.out)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder.embedding_table(y)
        for block in self.blocks:
            h = block(h, c)
        h = self.final_layer(h, c)
        g, p = int(h.shape[1] ** 0.5), self.patch
        h = h.reshape(h.shape[0], g, g, p, p, self.out)
        return torch.einsum("nhwpqc->nchpwq", h).reshape(h.shape[0], self.out, g * p, g * p)


# --- ADM (Dhariwal & Nichol 2021) -----------------------------------------------------------


class GroupNorm32(nn.GroupNorm):
    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class RefResBlock(nn.Module):
    def __init__(
        self, channels: int, emb: int, out: int, up: bool = False, down: bool = False
    ) -> None:
        super().__init__()
        self.up, self.down = up, down
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * out))
        self.out_layers = nn.Sequential(
            GroupNorm32(out), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out, out, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if out == channels else nn.Conv2d(channels, out, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, 2) if self.down else x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[:-1](x)
        h = self.in_layers[-1](self._resample(h))
        x = self._resample(x)
        scale, shift = self.emb_layers(emb)[..., None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        return self.skip_connection(x) + self.out_layers[1:](h)


class RefAttentionBlock(nn.Module):
    def __init__(self, channels: int, head_channels: int, new_order: bool) -> None:
        super().__init__()
        self.heads, self.new_order = channels // head_channels, new_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def _attention(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.heads)
        if self.new_order:  # QKVAttention: q, k, v first, then heads
            q, k, v = (p.reshape(bs * self.heads, ch, length) for p in qkv.chunk(3, dim=1))
        else:  # QKVAttentionLegacy: heads first, each holding its q, k, v
            q, k, v = qkv.reshape(bs * self.heads, 3 * ch, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).float().softmax(-1)
        return torch.einsum("bts,bcs->bct", weight.type(v.dtype), v).reshape(bs, -1, length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        h = self.proj_out(self._attention(self.qkv(self.norm(flat))))
        return (flat + h).reshape(b, c, *spatial)


class _Down(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class _Up(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Seq(nn.Sequential):
    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, RefResBlock) else layer(x)
        return x


class RefUNet(nn.Module):
    """guided-diffusion's ``UNetModel`` with AdaGN (``use_scale_shift_norm``); attention at the
    downsampling rates ``attention_ds`` (its ``image_size // resolution``)."""

    def __init__(
        self,
        channels: int,
        mc: int,
        mult: tuple[int, ...],
        blocks: int,
        attention_ds: tuple[int, ...],
        head_channels: int,
        classes: int,
        updown: bool = True,
        new_order: bool = False,
    ) -> None:
        super().__init__()
        emb, self.mc = 4 * mc, mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_emb = nn.Embedding(classes, emb) if classes else None

        def attention(ch: int) -> RefAttentionBlock:
            return RefAttentionBlock(ch, head_channels, new_order)

        ch = first = mult[0] * mc
        self.input_blocks = nn.ModuleList([_Seq(nn.Conv2d(channels, ch, 3, padding=1))])
        chans, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(blocks):
                layers: list[nn.Module] = [RefResBlock(ch, emb, m * mc)]
                ch = m * mc
                if ds in attention_ds:
                    layers.append(attention(ch))
                self.input_blocks.append(_Seq(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                down = RefResBlock(ch, emb, ch, down=True) if updown else _Down(ch)
                self.input_blocks.append(_Seq(down))
                chans.append(ch)
                ds *= 2
        self.middle_block = _Seq(RefResBlock(ch, emb, ch), attention(ch), RefResBlock(ch, emb, ch))
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(blocks + 1):
                layers = [RefResBlock(ch + chans.pop(), emb, m * mc)]
                ch = m * mc
                if ds in attention_ds:
                    layers.append(attention(ch))
                if level and i == blocks:
                    layers.append(RefResBlock(ch, emb, ch, up=True) if updown else _Up(ch))
                    ds //= 2
                self.output_blocks.append(_Seq(*layers))
        self.out = nn.Sequential(
            GroupNorm32(first), nn.SiLU(), nn.Conv2d(first, 2 * channels, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_embed(frequency_features(t, self.mc))
        if self.label_emb is not None and y is not None:
            emb = emb + self.label_emb(y)
        h, skips = x, []
        for module in self.input_blocks:
            h = module(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
