"""The training progress bar: steps, elapsed time, ETA and the latest logged loss."""

from __future__ import annotations

from types import TracebackType

from rich.progress import TextColumn

from ant.progress import progress_bar


class TrainProgress:
    """A progress bar on stderr (hidden when disabled, e.g. on ranks other than 0)."""

    def __init__(self, total: int, start: int, enabled: bool = True) -> None:
        self._progress = progress_bar(enabled, [TextColumn("{task.fields[loss]}")])
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
