"""The training progress bar: steps, rate, elapsed time, ETA and the latest logged loss."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """A rich progress bar on stderr (a no-op when disabled, e.g. on ranks other than 0)."""

    def __init__(self, total: int, start: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, loss="")

    def __enter__(self) -> TrainProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def advance(self) -> None:
        """One step done."""
        self._progress.advance(self._task)

    def show_loss(self, loss: float) -> None:
        """Show the latest logged loss."""
        self._progress.update(self._task, loss=f"loss {loss:.4f}")
