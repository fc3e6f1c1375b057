"""``ant data pack``: turn a data source into WebDataset shards of PNG images plus meta.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ant.core.errors import AntError
from ant.core.progress import track
from ant.data.images import encode_png
from ant.data.meta import DEFAULT_SHARD_SIZE, DatasetMeta, write_meta
from ant.data.sources import IMAGE_CHANNELS, DataSource, open_source
from ant.data.writer import ShardSink, prepare_output, sample_key


def pack(
    spec: str,
    out: Path | str,
    *,
    image_size: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
) -> DatasetMeta:
    """Pack the source ``spec`` into ``out/shard-NNNNNN.tar`` and ``out/meta.json``.

    Each sample holds ``__key__`` (the zero-padded index), ``png`` (lossless) and, for labelled
    sources, ``cls``. A failed pack removes the shards it wrote and leaves no meta.json.
    """
    source = open_source(spec, image_size)
    out = Path(out)
    prepare_output(out, overwrite)
    sink = ShardSink(out, shard_size)
    try:
        with sink:
            shape = _write_all(source, spec, sink)
    except BaseException:
        for name in sink.shards:
            (out / name).unlink(missing_ok=True)
        raise
    meta = DatasetMeta(
        count=sum(sink.counts),
        shape=list(shape),
        classes=list(source.classes),
        source=spec,
        shards=sink.shards,
        shard_counts=sink.counts,
        image_size=image_size,
        format="png",
        labelled=bool(source.classes),
    )
    write_meta(out, meta)
    return meta


def _write_all(source: DataSource, spec: str, sink: ShardSink) -> tuple[int, ...]:
    try:
        total: int | None = len(source)
    except TypeError:
        total = None
    shape: tuple[int, ...] | None = None
    for index, (image, label) in enumerate(track(source, total, f"packing {spec}")):
        _check_image(spec, index, image, shape)
        _check_label(spec, index, label, len(source.classes))
        shape = image.shape
        sample: dict[str, str | bytes] = {"__key__": sample_key(index), "png": encode_png(image)}
        if label is not None:
            sample["cls"] = str(int(label)).encode()
        sink.write(sample)
    if shape is None:
        raise AntError(f"data source '{spec}' yielded no images: check that it is not empty")
    return shape


def _check_image(spec: str, index: int, image: np.ndarray, shape: tuple[int, ...] | None) -> None:
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] not in IMAGE_CHANNELS
    ):
        got = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image)
        raise AntError(
            f"data source '{spec}' yielded a bad image at index {index} ({got}): sources must "
            "yield uint8 arrays [H, W, C] with C in 1, 3, 4"
        )
    if shape is not None and image.shape != shape:
        raise AntError(
            f"data source '{spec}': image {index} has shape {list(image.shape)} but earlier "
            f"images are {list(shape)}: pass --image-size S to give every image one size"
        )


def _check_label(spec: str, index: int, label: object, num_classes: int) -> None:
    if num_classes == 0:
        if label is not None:
            raise AntError(
                f"data source '{spec}' has no classes but yielded label {label!r} at index {index}"
            )
        return
    if (
        isinstance(label, bool)
        or not isinstance(label, int | np.integer)
        or not 0 <= int(label) < num_classes
    ):
        raise AntError(
            f"data source '{spec}' yielded label {label!r} at index {index}; labelled sources "
            f"must yield an int in 0..{num_classes - 1} for every image"
        )
