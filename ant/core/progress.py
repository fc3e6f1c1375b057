"""The one progress-bar style of ant: description, bar, done/total, elapsed time and ETA.

Three ways to drive it: :func:`track` over an iterable (packing, verifying shards),
:func:`step_progress` by callback (one tick per sampler step), :class:`TrainProgress` for the
training loop (steps and the latest logged loss).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(enabled: bool = True, extra: Sequence[ProgressColumn] = ()) -> Progress:
    """A rich progress bar on stderr, with ``extra`` columns after the counts.

    It is drawn only when ``enabled`` and stderr is a terminal, so logs and pipes stay clean.
    """
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
    )


T = TypeVar("T")


def track(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    """Yield ``items`` while advancing a progress bar of ``total`` steps (None: unknown)."""
    progress = progress_bar()
    with progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


@contextmanager
def step_progress(total: int, description: str, enabled: bool) -> Iterator[Callable[[], None]]:
    """Yield a callback that advances a bar of ``total`` ticks by one.

    The bar is shown only when ``enabled`` and stderr is a terminal; otherwise the callback
    does nothing visible.
    """
    progress = progress_bar(enabled)
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


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
