"""Run logs: ``metrics.jsonl`` (one JSON object per logged step), TensorBoard events, and the
logger interface every ``logger`` plugin implements (:class:`RunLogger`)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Protocol

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


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The finite scalars of a record, as trackers take them: a list becomes ``name/i``, a
    symmetric matrix (a list of lists, the gradient cosines) its upper triangle ``name/i_j``;
    ``step`` and non-numbers are left out."""
    flat: dict[str, float] = {}
    for name, value in record.items():
        if name == "step":
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, list):
                    for j, entry in enumerate(item[i + 1 :], start=i + 1):
                        flat[f"{name}/{i}_{j}"] = entry
                else:
                    flat[f"{name}/{i}"] = item
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = value
    return {k: float(v) for k, v in flat.items() if isinstance(v, int | float) and math.isfinite(v)}


class RunLogger(Protocol):
    """What a ``logger`` plugin builds (``train.loggers``): rank 0 of a training run hands it
    every metric record, the sample grids and, at the end, ``close``.

    The factory is called as ``factory(run_dir=..., start_step=..., config=..., **options)``:
    ``config`` is the resolved recipe as plain data, ``start_step`` the step a resumed run
    continues from (0 for a new run), ``options`` the entry's keys in ``train.loggers``.
    """

    def log(self, record: dict[str, Any]) -> None:
        """One record: ``step`` and the metrics of that step (see :func:`scalars`)."""

    def log_image(self, step: int, name: str, path: Path) -> None:
        """An image file written at ``step`` (a sample grid), under ``name``."""

    def close(self) -> None:
        """Flush and finish (the run ended or stopped)."""


class JsonlLogger:
    """Appends every record to the run's ``metrics.jsonl`` (read by ``ant runs``, sweeps)."""

    def __init__(self, run_dir: Path, start_step: int = 0, config: Any = None) -> None:
        self.path = run_dir / METRICS_FILE

    def log(self, record: dict[str, Any]) -> None:
        line = json.dumps(strict(record), allow_nan=False) + "\n"
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError as exc:
            if exc.errno in DISK_ERRORS:
                raise disk_error(self.path, exc, len(line)) from None
            raise

    def log_image(self, step: int, name: str, path: Path) -> None:
        """Images stay files in the run directory (``samples/``)."""

    def close(self) -> None:
        """Each record is written when logged: nothing to flush."""


class TensorBoardLogger:
    """TensorBoard event files in ``RUN_DIR/tensorboard`` (scalars as :func:`scalars`, and the
    sample grids as images); a resumed run purges the events after its checkpoint's step."""

    def __init__(self, run_dir: Path, start_step: int = 0, config: Any = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step)

    def log(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for name, value in scalars(record).items():
            self.writer.add_scalar(name, value, step)

    def log_image(self, step: int, name: str, path: Path) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(name, pixels, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class Logbook:
    """Rank 0's loggers (``train.loggers``), fed the same records and images in order."""

    def __init__(self, loggers: list[RunLogger]) -> None:
        self.loggers = loggers

    def log(self, record: dict[str, Any]) -> None:
        """Hand one record to every logger."""
        for each in self.loggers:
            each.log(record)

    def log_image(self, step: int, name: str, path: Path) -> None:
        """Hand one image file to every logger."""
        for each in self.loggers:
            each.log_image(step, name, path)

    def close(self) -> None:
        """Close every logger, the first failure raised after all were closed."""
        failure: BaseException | None = None
        for each in self.loggers:
            try:
                each.close()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
