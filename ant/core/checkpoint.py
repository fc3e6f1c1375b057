"""Checkpoints: written atomically, loaded with ``weights_only=True``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ant.core.atomic import load_torch_file, torch_save
from ant.core.errors import AntError

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FORMAT = 1
"""The layout of the checkpoint dictionary; a reader refuses a newer one (a dictionary without
``format``, assembled by hand, is read as this one)."""
_NAME = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """``RUN_DIR/checkpoints/step-0000100.pt``."""
    return run_dir / CHECKPOINT_DIR / f"step-{step:07d}.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename, fsync the folder).

    A crash at any point leaves either the previous file or the complete new one, never a
    truncated checkpoint under the final name; a full or read-only disk is one line with the
    checkpoint's size and the space free.
    """
    return torch_save(state, path, size=tensor_bytes(state))


def tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in a nested state (about the size of its checkpoint)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(v) for v in value)
    return 0


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a bad file gives one line naming it."""
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise AntError(f"no checkpoint in {path}: expected {CHECKPOINT_DIR}/step-*.pt there")
        path = latest
    if not path.is_file():
        raise AntError(f"checkpoint not found: {path}")
    state = load_torch_file(path, "checkpoint of ant", map_location)
    if not isinstance(state, dict) or "model" not in state or "recipe" not in state:
        raise AntError(f"{path} is not an ant checkpoint (no model weights and recipe in it)")
    written = state.get("format", CHECKPOINT_FORMAT)
    if not isinstance(written, int) or written > CHECKPOINT_FORMAT:
        raise AntError(
            f"{path} has checkpoint format {written!r}, this ant reads format "
            f"{CHECKPOINT_FORMAT} and older: upgrade ant (pip install -U ant-diffusion)"
        )
    return state


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The run's checkpoints as (step, path), oldest first."""
    folder = run_dir / CHECKPOINT_DIR if (run_dir / CHECKPOINT_DIR).is_dir() else run_dir
    found = []
    for path in folder.glob("step-*.pt"):
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of a run directory, if any."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None
