"""Run logs: ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard events."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of a run's ``metrics.jsonl``."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop records after ``step`` (a resumed run logs those steps again)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in kept if json.loads(line).get("step", 0) <= step]
    path.write_text("".join(f"{line}\n" for line in kept))


class Logbook:
    """Appends metric records to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, start_step: int, tensorboard: bool = True) -> None:
        self.path = run_dir / METRICS_FILE
        self.writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step)

    def log(self, record: dict[str, Any]) -> None:
        """Write one record; lists become ``name/i`` scalars in TensorBoard, and a symmetric
        matrix (a list of lists) its upper triangle ``name/i_j``."""
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is None:
            return
        step = int(record["step"])
        for name, value in record.items():
            if name == "step":
                continue
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, list):
                        for j, entry in enumerate(item[i + 1 :], start=i + 1):
                            self.writer.add_scalar(f"{name}/{i}_{j}", entry, step)
                    else:
                        self.writer.add_scalar(f"{name}/{i}", item, step)
            elif isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()
