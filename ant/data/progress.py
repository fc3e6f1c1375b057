"""Progress over the samples of a long pack."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from ant.progress import progress_bar

T = TypeVar("T")


def track(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    """Yield ``items`` while advancing a progress bar of ``total`` steps (None: unknown)."""
    progress = progress_bar()
    with progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
