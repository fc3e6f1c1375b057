"""A rich progress bar with ETA on stderr, advanced by a callback (one tick per sampler step)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def step_progress(total: int, description: str, enabled: bool) -> Iterator[Callable[[], None]]:
    """Yield a callback that advances a bar of ``total`` ticks by one.

    The bar is shown only when ``enabled`` and stderr is a terminal; otherwise the callback
    does nothing visible.
    """
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)
