"""Progress of sampling, advanced by a callback (one tick per sampler step)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ant.progress import progress_bar


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
