"""Starting from published weights (``model.init_from``): ant checkpoints, facebookresearch/DiT
checkpoints and openai/guided-diffusion ADM checkpoints, mapped onto ant's models exactly.

* **ant**: a run directory or a checkpoint file; the model from its ``model`` weights, the EMA
  from its ``ema`` weights.
* **DiT** (Peebles & Xie 2023): ant's DiT keeps the reference module names, so a released
  state dict (e.g. ``DiT-XL-2-256x256.pt``, the EMA weights) or a ``train.py`` checkpoint
  (``model``, ``ema``, ``opt``, ``args``) maps key for key; ``pos_embed`` and the label table
  with its null class (row ``num_classes``) are checked like every other tensor.
* **ADM** (Dhariwal & Nichol 2021): guided-diffusion names the parts of a residual block by
  position (``in_layers.0`` the norm, ``in_layers.2`` the convolution, ``emb_layers.1``,
  ``out_layers.0``/``.3``, ``skip_connection``), the strided downsampling convolution ``op``, the
  label table ``label_emb``, and writes the attention projections as 1-D convolutions. Its
  released models use ``QKVAttentionLegacy``, whose QKV channels run head by head
  (``[q_h | k_h | v_h]`` for each head h); ant's run part by part (``[q | k | v]``, each split
  into heads): :func:`legacy_qkv_to_ant` reorders them. ``adm-new-attention`` is the layout of
  guided-diffusion's ``use_new_attention_order=True``, already part by part.

A checkpoint without a null-class row (guided-diffusion's have none) initialises a model with one
from the class rows it has; the null row keeps its fresh initialisation. Every other difference
of keys or shapes is refused in one line naming them, unless ``model.init_strict`` is false:
then what fits is loaded and the rest is listed. Files load with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ant.core.atomic import load_torch_file
from ant.core.checkpoint import latest_checkpoint
from ant.core.errors import AntError

logger = logging.getLogger(__name__)

FORMATS = ("auto", "ant", "dit", "adm", "adm-new-attention")

# guided-diffusion's module names -> ant's (ResBlock parts, the downsampling conv, the labels).
_ADM_RENAMES: tuple[tuple[str, str], ...] = (
    (r"\.in_layers\.0\.", ".in_norm."),
    (r"\.in_layers\.2\.", ".in_conv."),
    (r"\.emb_layers\.1\.", ".emb_proj."),
    (r"\.out_layers\.0\.", ".out_norm."),
    (r"\.out_layers\.3\.", ".out_conv."),
    (r"\.skip_connection\.", ".skip."),
    (r"\.proj_out\.", ".proj."),
    (r"\.op\.", ".conv."),
    (r"^label_emb\.weight$", "label_embed.embedding_table.weight"),
)


def legacy_qkv_to_ant(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """The QKV projection (weight ``[3C, ...]`` or bias ``[3C]``) of guided-diffusion's
    ``QKVAttentionLegacy``, whose output channel ``h·3d + j·d + c`` is part j (q, k, v) of head
    h, reordered to ant's ``j·C + h·d + c`` (``C = heads·d``)."""
    rest = tensor.shape[1:]
    width = tensor.shape[0] // (3 * heads)
    return tensor.reshape(heads, 3, width, *rest).transpose(0, 1).reshape(3 * heads * width, *rest)


def detect_format(state: Any) -> str:
    """``ant``, ``dit`` or ``adm`` from a loaded file's structure."""
    if isinstance(state, dict) and "recipe" in state and "model" in state:
        return "ant"
    weights = state.get("ema", state) if isinstance(state, dict) else None
    if isinstance(weights, dict):
        if "x_embedder.proj.weight" in weights:
            return "dit"
        if "input_blocks.0.0.weight" in weights and "time_embed.0.weight" in weights:
            return "adm"
    raise AntError(
        "model.init_from: not an ant, DiT or ADM checkpoint (no x_embedder.proj.weight or "
        "input_blocks.0.0.weight in it): pass one of those, or set model.init_format"
    )


def _tensors(value: Any, path: Path, part: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, dict) or not all(isinstance(v, torch.Tensor) for v in value.values()):
        raise AntError(f"model.init_from: {path} has no {part} state dict of tensors")
    return value


def _split(state: Any, fmt: str, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (model, EMA) state dicts of a file in format ``fmt``, in the file's own names."""
    if fmt == "ant":
        return _tensors(state["model"], path, "model"), _tensors(state["ema"], path, "ema")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        model = _tensors(state["model"], path, "model")
        return model, _tensors(state.get("ema", model), path, "ema")
    if isinstance(state, dict) and "ema" in state and isinstance(state["ema"], dict):
        ema = _tensors(state["ema"], path, "ema")
        return ema, ema
    weights = _tensors(state, path, "model")
    return weights, weights


def convert_adm(
    weights: dict[str, torch.Tensor], model: nn.Module, legacy: bool = True
) -> dict[str, torch.Tensor]:
    """A guided-diffusion ADM state dict in ant's names and layouts (see the module docstring);
    the attention widths come from ``model``'s blocks."""
    out: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        name = key
        for pattern, new in _ADM_RENAMES:
            name = re.sub(pattern, new, name)
        block, _, leaf = name.rpartition(".")
        if block.endswith((".qkv", ".proj")) and value.ndim == 3 and leaf == "weight":
            value = value.squeeze(-1)
        if legacy and block.endswith(".qkv"):
            parent = _module(model, block.rpartition(".")[0])
            heads = getattr(parent, "heads", None)
            if heads is not None and value.shape[0] % (3 * heads) == 0:
                value = legacy_qkv_to_ant(value, heads)
        out[name] = value
    return out


def _module(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


@dataclass
class Fit:
    """How a converted state dict fits a model: what loads and what does not."""

    loadable: dict[str, torch.Tensor] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    null_rows: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """Every tensor of the model comes from the checkpoint (null rows aside)."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self, limit: int = 4) -> str:
        """The differences as one short phrase, at most ``limit`` keys of each kind."""

        def some(keys: list[str]) -> str:
            shown = ", ".join(keys[:limit])
            return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")

        parts = []
        if self.mismatched:
            parts.append(f"shapes differ for {some(self.mismatched)}")
        if self.missing:
            parts.append(f"missing from the checkpoint: {some(self.missing)}")
        if self.unexpected:
            parts.append(f"not in the model: {some(self.unexpected)}")
        return "; ".join(parts)


def match(weights: dict[str, torch.Tensor], model: nn.Module) -> Fit:
    """Compare ``weights`` (in ant's names) with ``model``'s state dict key by key."""
    own = model.state_dict()
    fit = Fit()
    for key, target in own.items():
        value = weights.get(key)
        if value is None:
            fit.missing.append(key)
        elif value.shape == target.shape:
            fit.loadable[key] = value
        elif (
            key.endswith("embedding_table.weight")
            and value.shape[1:] == target.shape[1:]
            and value.shape[0] + 1 == target.shape[0]
        ):
            merged = target.detach().clone()
            merged[: value.shape[0]] = value.to(merged.dtype)
            fit.loadable[key] = merged
            fit.null_rows.append(key)
        else:
            shapes = f"{tuple(value.shape)} vs the model's {tuple(target.shape)}"
            fit.mismatched.append(f"{key} {shapes}")
    fit.unexpected = sorted(set(weights) - set(own))
    return fit


def _resolve(spec: str) -> Path:
    path = Path(spec)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise AntError(f"model.init_from: no checkpoint in {path}: pass a run or a .pt file")
        return latest
    if not path.is_file():
        raise AntError(f"model.init_from: {path} not found: pass a checkpoint file or a run")
    return path


def load_init_weights(
    spec: str, model: nn.Module, ema: nn.Module, *, strict: bool = True, fmt: str = "auto"
) -> str:
    """Initialise ``model`` and ``ema`` in place from ``spec`` (``model.init_from``); returns a
    one-line summary. Raises :class:`AntError` naming the keys that do not fit (``strict``)."""
    path = _resolve(spec)
    state = load_torch_file(path, "checkpoint", "cpu")
    found = detect_format(state) if fmt == "auto" else fmt
    if found == "ant" and not (isinstance(state, dict) and "model" in state):
        raise AntError(f"model.init_from: {path} is not an ant checkpoint (no model weights)")
    model_state, ema_state = _split(state, found, path)
    if found.startswith("adm"):
        legacy, same = found == "adm", ema_state is model_state
        model_state = convert_adm(model_state, model, legacy)
        ema_state = model_state if same else convert_adm(ema_state, ema, legacy)
    fits = [match(model_state, model), match(ema_state, ema)]
    fit = fits[0]
    if not fit.exact and strict:
        raise AntError(
            f"model.init_from: {path} ({found} layout) does not fit the model: {fit.problems()}; "
            "match model.num_classes, diffusion.learn_sigma and the model's size to the "
            "checkpoint, or set model.init_strict=false to load what fits"
        )
    for target, each in zip((model, ema), fits, strict=True):
        with torch.no_grad():
            own = target.state_dict()
            for key, value in each.loadable.items():
                own[key].copy_(value.to(own[key].dtype))
    summary = f"initialised from {path} ({found} layout): {len(fit.loadable)} tensors"
    if fit.null_rows:
        summary += ", the null-class row of the label table fresh (the checkpoint has none)"
    if not fit.exact:
        summary += f"; not loaded: {fit.problems()}"
    return summary
