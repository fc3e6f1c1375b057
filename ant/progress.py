"""The one progress-bar style of ant: description, bar, done/total, elapsed time and ETA."""

from __future__ import annotations

from collections.abc import Sequence

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
