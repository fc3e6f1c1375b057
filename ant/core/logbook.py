"""Run logs: ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard events."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from ant.core.atomic import DISK_ERRORS, atomic_write, disk_error
from ant.core.errors import AntError

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def _parse(lines: list[str], path: Path, *, warn: bool) -> list[dict[str, Any]]:
    """The records of ``lines``; a torn last line (a crash mid-write) is dropped."""
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number < len(lines):
                raise AntError(f"{path} line {number} is not JSON: repair or delete it") from None
            if warn:
                logger.warning("dropped the torn last line of %s (a crash mid-write)", path)
    return records


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of a run's ``metrics.jsonl`` (without a torn last line)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return _parse(
        [line for line in path.read_text().splitlines() if line.strip()], path, warn=False
    )


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop records after ``step`` (a resumed run logs those steps again), and a torn last line
    with a warning."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = _parse(lines, path, warn=True)
    kept = [json.dumps(strict(r)) for r in records if r.get("step", 0) <= step]
    with atomic_write(path, text=True) as handle:
        handle.write("".join(f"{line}\n" for line in kept))


def strict(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (strict JSON's ``null``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return value


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
        line = json.dumps(strict(record), allow_nan=False) + "\n"
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError as exc:
            if exc.errno in DISK_ERRORS:
                raise disk_error(self.path, exc, len(line)) from None
            raise
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
