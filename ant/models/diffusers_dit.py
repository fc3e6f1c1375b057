"""ant's DiT as diffusers' ``DiTTransformer2DModel``: the configuration and the weights.

diffusers keeps the architecture but not the names, and differs in four places, each handled
here or by the caller:

* **the timestep frequencies**: diffusers fixes ``downscale_freq_shift = 1``, frequencies
  ``10000^(-k/127)`` where DiT has ``10000^(-k/128)``. No change of weights undoes that, so only
  a DiT trained with ``freq_shift = 1`` exports exactly; for the paper's embedding
  :func:`timestep_frequency_fix` is the one line that makes a loaded transformer exact.
* **one embedder per block**: every block's ``norm1.emb`` holds its own copy of the timestep
  MLP and the label table (the final layer reads the first block's), so ant's one embedder is
  copied into each.
* **the label table always has a null row** (``num_embeds_ada_norm + 1`` rows): an ant model
  without one (``class_dropout = 0``) gets a zero row, never used by its labels; an
  unconditional model becomes one class whose rows are zero, so ``c = t_emb`` as before.
* **the pre-MLP LayerNorm eps** is the configuration's ``norm_eps`` (default 1e-5): set to DiT's
  1e-6.

QKV is split into ``to_q``, ``to_k``, ``to_v`` (timm lays them out ``[q | k | v]``), the MLP is
``ff.net.0.proj`` and ``ff.net.2``, the final adaLN ``proj_out_1``, the decoder ``proj_out_2``.
"""

from __future__ import annotations

from typing import Any

import torch

from ant.models.dit import DiT


def timestep_frequency_fix(shift: float) -> str:
    """Python that gives a loaded transformer the timestep frequencies of a DiT trained with
    ``freq_shift = shift`` (diffusers' ``downscale_freq_shift``)."""
    return (
        "for block in transformer.transformer_blocks: "
        f"block.norm1.emb.time_proj.downscale_freq_shift = {shift:g}"
    )


DIFFUSERS_SHIFT = 1.0


def diffusers_dit_config(model: DiT) -> dict[str, Any]:
    """The ``DiTTransformer2DModel`` keyword arguments of ``model``'s architecture."""
    hidden = model.pos_embed.shape[-1]
    heads = model.num_heads
    return {
        "num_attention_heads": int(heads),
        "attention_head_dim": int(hidden // heads),
        "in_channels": model.in_channels,
        "out_channels": model.out_channels,
        "num_layers": len(model.blocks),
        "dropout": 0.0,
        "attention_bias": True,
        "sample_size": model.input_size,
        "patch_size": model.patch_size,
        "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": max(model.num_classes, 1),
        "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
        "norm_eps": 1e-6,
    }


def _label_table(model: DiT) -> torch.Tensor:
    """ant's label table with diffusers' rows: classes, then the null row (zero if none)."""
    hidden = model.pos_embed.shape[-1]
    if model.y_embedder is None:
        return torch.zeros(2, hidden)
    table = model.y_embedder.embedding_table.weight.detach()
    if model.null_label is None:
        table = torch.cat([table, torch.zeros(1, hidden, dtype=table.dtype)])
    return table


def dit_to_diffusers_state(model: DiT) -> dict[str, torch.Tensor]:
    """``model``'s weights in the names and layout of ``DiTTransformer2DModel``."""
    own = {k: v.detach() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {
        "pos_embed.proj.weight": own["x_embedder.proj.weight"],
        "pos_embed.proj.bias": own["x_embedder.proj.bias"],
        "proj_out_1.weight": own["final_layer.adaLN_modulation.1.weight"],
        "proj_out_1.bias": own["final_layer.adaLN_modulation.1.bias"],
        "proj_out_2.weight": own["final_layer.linear.weight"],
        "proj_out_2.bias": own["final_layer.linear.bias"],
    }
    table = _label_table(model)
    for i in range(len(model.blocks)):
        src, dst = f"blocks.{i}.", f"transformer_blocks.{i}."
        emb = dst + "norm1.emb."
        for part in ("weight", "bias"):
            out[f"{emb}timestep_embedder.linear_1.{part}"] = own[f"t_embedder.mlp.0.{part}"]
            out[f"{emb}timestep_embedder.linear_2.{part}"] = own[f"t_embedder.mlp.2.{part}"]
            out[f"{dst}norm1.linear.{part}"] = own[f"{src}adaLN_modulation.1.{part}"]
            q, k, v = own[f"{src}attn.qkv.{part}"].chunk(3, dim=0)
            out[f"{dst}attn1.to_q.{part}"] = q
            out[f"{dst}attn1.to_k.{part}"] = k
            out[f"{dst}attn1.to_v.{part}"] = v
            out[f"{dst}attn1.to_out.0.{part}"] = own[f"{src}attn.proj.{part}"]
            out[f"{dst}ff.net.0.proj.{part}"] = own[f"{src}mlp.fc1.{part}"]
            out[f"{dst}ff.net.2.{part}"] = own[f"{src}mlp.fc2.{part}"]
        out[f"{emb}class_embedder.embedding_table.weight"] = table
    return {k: v.contiguous().clone() for k, v in out.items()}
