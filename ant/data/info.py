"""``ant data info``: describe packed shards and optionally verify every sample."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ant.core.errors import AntError
from ant.core.progress import track
from ant.data.decode import decode_sample
from ant.data.meta import DatasetMeta
from ant.data.shards import ShardError, ShardSet, describe_exception, iter_shard

MAX_CLASS_NAMES = 20


@dataclass(frozen=True)
class Summary:
    """What is known about a set of shards (None: unknown without meta.json)."""

    count: int | None
    shape: list[int]
    classes: list[str] | None
    labelled: bool
    format: str
    source: str | None
    image_size: int | None


@dataclass(frozen=True)
class ShardCheck:
    """The result of reading every sample of one shard."""

    url: str
    count: int
    expected: int | None
    problem: str | None

    @property
    def ok(self) -> bool:
        """Whether the shard read cleanly and holds the expected number of samples."""
        return self.problem is None and (self.expected is None or self.count == self.expected)


def summarize(shards: ShardSet) -> Summary:
    """The summary from meta.json, or else from the first sample of the first shard."""
    meta = shards.meta
    if meta is not None:
        return Summary(
            count=shards.count,
            shape=list(meta.shape),
            classes=list(meta.classes),
            labelled=meta.labelled,
            format=meta.format,
            source=meta.source,
            image_size=meta.image_size,
        )
    url = shards.urls[0]
    try:
        sample = next(iter_shard(url), None)
    except ShardError as error:
        raise AntError(f"cannot read shard {url} ({error.reason}): re-pack it") from None
    if sample is None:
        raise AntError(f"shard {url} holds no samples: re-pack the data")
    try:
        x, _, _ = decode_sample(sample)
    except Exception as exc:
        reason = describe_exception(exc)
        raise AntError(f"cannot decode the first sample of {url} ({reason}): re-pack it") from None
    return Summary(
        count=None,
        shape=[x.shape[1], x.shape[2], x.shape[0]],
        classes=None,
        labelled="cls" in sample,
        format="npy" if "x.npy" in sample else "png",
        source=None,
        image_size=None,
    )


def check_sample(sample: dict[str, Any], meta: DatasetMeta | None) -> None:
    """Decode ``sample`` and check it against ``meta`` (shape, finite values, label range);
    raises ValueError (or the decoder's error) naming what is wrong."""
    x, y, _ = decode_sample(sample)
    if meta is not None:
        height, width, channels = meta.shape
        if x.shape != (channels, height, width):
            expected = [channels, height, width]
            raise ValueError(f"shape {list(x.shape)} (C, H, W) differs from meta.json's {expected}")
        if meta.labelled and meta.num_classes and not 0 <= y < meta.num_classes:
            raise ValueError(f"label {y} is outside meta.json's {meta.num_classes} classes")
    if not np.isfinite(x).all():
        raise ValueError("it holds NaN or infinite values")


def _check_shard(url: str, expected: int | None, meta: DatasetMeta | None) -> ShardCheck:
    count = 0
    problem = None
    try:
        for sample in iter_shard(url):
            try:
                check_sample(sample, meta)
            except Exception as exc:
                problem = problem or f"sample {sample.get('__key__')}: {describe_exception(exc)}"
                continue
            count += 1
    except ShardError as error:
        problem = error.reason
    return ShardCheck(url=url, count=count, expected=expected, problem=problem)


def verify(shards: ShardSet) -> list[ShardCheck]:
    """Read, decode and check every sample of every shard against meta.json (with a progress
    bar)."""
    pairs = zip(shards.urls, shards.expected_counts(), strict=True)
    tracked = track(pairs, len(shards.urls), "verifying")
    return [_check_shard(url, count, shards.meta) for url, count in tracked]


def _classes_text(summary: Summary) -> str:
    if summary.classes is None:
        return "labelled, names unknown (no meta.json)" if summary.labelled else "unlabelled"
    if not summary.classes:
        return "0 (unlabelled)"
    names = ", ".join(summary.classes[:MAX_CLASS_NAMES])
    more = f", ... ({len(summary.classes) - MAX_CLASS_NAMES} more)"
    return (
        f"{len(summary.classes)}: {names}{more if len(summary.classes) > MAX_CLASS_NAMES else ''}"
    )


def render(
    shards: ShardSet, summary: Summary, checks: list[ShardCheck] | None, console: Console
) -> None:
    """Print the summary and the shard list (with verification results when given)."""
    height, width, channels = summary.shape
    facts = Table(show_header=False, box=None, pad_edge=False)
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    facts.add_row("shards", shards.spec)
    facts.add_row(
        "samples", "unknown (no meta.json)" if summary.count is None else str(summary.count)
    )
    facts.add_row("sample shape", f"{height} x {width} x {channels} (H x W x C)")
    facts.add_row("channels", str(channels))
    facts.add_row("classes", _classes_text(summary))
    facts.add_row("format", summary.format)
    if summary.source is not None:
        facts.add_row("source", summary.source)
    if summary.source is not None and summary.format == "png":
        facts.add_row("image size", str(summary.image_size or "native"))
    console.print(facts)
    listing = Table(title=f"{len(shards.urls)} shard(s)", title_justify="left")
    listing.add_column("shard", overflow="fold")
    listing.add_column("samples", justify="right")
    if checks is not None:
        listing.add_column("check", overflow="fold")
    for index, (url, count) in enumerate(zip(shards.urls, shards.expected_counts(), strict=True)):
        row = [url, "?" if count is None else str(count)]
        if checks is not None:
            row.append(_check_text(checks[index]))
        listing.add_row(*row)
    console.print(listing)


def _check_text(check: ShardCheck) -> str:
    if check.problem is not None:
        return f"CORRUPT: {check.problem}"
    if check.expected is not None and check.count != check.expected:
        return f"WRONG COUNT: read {check.count}"
    return f"ok ({check.count})"


def verdict(summary: Summary, checks: list[ShardCheck]) -> str:
    """One line saying the shards verified; raises AntError naming the bad shards otherwise."""
    total = sum(check.count for check in checks)
    bad = [check for check in checks if not check.ok]
    if bad:
        names = ", ".join(PurePosixPath(check.url).name for check in bad)
        raise AntError(
            f"verification failed: {len(bad)} of {len(checks)} shard(s) corrupt or short "
            f"({names}); re-pack the data, or set data.skip_corrupt=true to skip bad data"
        )
    if summary.count is not None and total != summary.count:
        raise AntError(
            f"verification failed: read {total} samples but meta.json says {summary.count}; "
            "re-pack the data"
        )
    return f"verified: {total} samples in {len(checks)} shard(s) read, decoded and checked"
