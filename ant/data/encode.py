"""``ant data encode``: image shards -> latent shards through a VAE, resumable, over torchrun ranks.

Input shard ``i`` becomes output shard ``shard-i.tar`` with the same samples in the same order
(keys and labels kept), so the work splits over ranks by shard (rank ``r`` encodes shards
``r, r + W, ...``) and an interrupted run resumes by skipping the shards already finished. Each
shard is written as ``.partial`` and renamed when complete; ``meta.json`` is written last, by
rank 0 once every shard exists, so a folder without it is never read as a finished data set.
``encode.json`` records the settings while the encode is unfinished: running the same command
again resumes, other settings need ``--overwrite``.

A latent is ``x.npy``, float32 ``[C, H/f, W/f]`` (``--dtype float16`` halves the storage at
about 3 significant digits). The posterior is sampled (``--posterior sample``, as DiT) with noise
seeded by ``(--seed, sample key)``, so the output does not depend on the batch size, the number
of ranks or resuming; ``--posterior mean`` is deterministic. ``--flip`` also stores the latent of
each horizontally flipped image as sample ``KEY-flip``: twice the storage and encode time, for
exact flip augmentation (flipping a latent is not the latent of the flipped image).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from ant.core.atomic import atomic_write
from ant.core.errors import AntError
from ant.core.progress import progress_bar
from ant.core.runtime import Runtime
from ant.data.decode import UNLABELLED, decode_sample
from ant.data.meta import META_NAME, SHARD_PREFIX, DatasetMeta, read_meta, shard_name, write_meta
from ant.data.shards import ShardError, ShardSet, describe_exception, iter_shard, resolve_shards
from ant.data.vae import Vae, VaeSpec, keyed_noise
from ant.data.writer import PARTIAL_SUFFIX, encode_npy

STATE_NAME = "encode.json"
FLIP_SUFFIX = "-flip"
DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class EncodeSettings:
    """What decides the latents written (a resumed encode must use the same)."""

    source: str
    vae: str
    subfolder: str | None
    scale: float
    shift: float
    factor: int
    posterior: str
    seed: int
    flip: bool
    dtype: str
    precision: str


def _source(spec: str) -> tuple[ShardSet, DatasetMeta]:
    shard_set = resolve_shards(spec)
    meta = shard_set.meta
    if meta is None:
        raise AntError(
            f"'{spec}' has no meta.json: encode a folder written by 'ant data pack' (its "
            "meta.json gives the counts, image size and classes)"
        )
    if meta.format != "png":
        raise AntError(f"'{spec}' holds {meta.format} arrays, not images: encode image shards")
    return shard_set, meta


def _clean(out: Path) -> None:
    for path in out.iterdir():
        ours = path.name.startswith((SHARD_PREFIX, META_NAME, STATE_NAME))
        if path.is_file() and ours:
            path.unlink()


def _read_state(out: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out / STATE_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _plan_output(out: Path, settings: EncodeSettings, overwrite: bool) -> str:
    """``fresh``, ``resume`` or ``overwrite``; raises AntError for an output it must not touch."""
    if out.exists() and not out.is_dir():
        raise AntError(f"output '{out}' is a file, not a folder: choose a folder for the latents")
    if not out.is_dir() or not any(out.iterdir()):
        return "fresh"
    if overwrite:
        return "overwrite"
    if (out / META_NAME).is_file():
        raise AntError(
            f"'{out}' already holds a finished data set: pass --overwrite to encode again, or "
            "choose another folder"
        )
    if _read_state(out) == asdict(settings):
        return "resume"
    raise AntError(
        f"output folder '{out}' is not empty and is not an unfinished encode with these "
        "settings: pass --overwrite to replace it, or choose another folder"
    )


def _prepare_output(out: Path, settings: EncodeSettings, plan: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if plan == "overwrite":
        _clean(out)
    for path in out.glob(f"*{PARTIAL_SUFFIX}"):
        path.unlink()
    with atomic_write(out / STATE_NAME, text=True) as handle:
        handle.write(json.dumps(asdict(settings), indent=2) + "\n")


def _batches(url: str, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for sample in iter_shard(url):
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Encoder:
    def __init__(self, vae: Vae, settings: EncodeSettings) -> None:
        self.vae = vae
        self.settings = settings
        self.dtype = DTYPES[settings.dtype]

    def latents(self, images: torch.Tensor, keys: list[str]) -> np.ndarray:
        noise = None
        if self.settings.posterior == "sample":
            shape = self.vae.latent_shape(images.shape[1:])
            noise = keyed_noise(self.settings.seed, keys, shape)
        z = self.vae.encode(images, posterior=self.settings.posterior, noise=noise)
        return z.cpu().numpy().astype(self.dtype)

    def samples(self, raw: list[dict[str, Any]], url: str) -> list[dict[str, str | bytes]]:
        decoded = []
        for item in raw:
            try:
                decoded.append(decode_sample(item))
            except Exception as exc:
                key = str(item.get("__key__", "?"))
                raise ShardError(url, describe_exception(exc), key) from exc
        images = torch.from_numpy(np.stack([x for x, _, _ in decoded]))
        keys = [key for _, _, key in decoded]
        if self.settings.flip:
            images = torch.cat([images, images.flip(-1)])
            keys = keys + [key + FLIP_SUFFIX for key in keys]
        latents = self.latents(images, keys)
        labels = [y for _, y, _ in decoded] * (2 if self.settings.flip else 1)
        count = len(decoded)
        order = (
            [i for pair in zip(range(count), range(count, 2 * count), strict=True) for i in pair]
            if self.settings.flip
            else range(count)
        )
        out: list[dict[str, str | bytes]] = []
        for i in order:
            sample: dict[str, str | bytes] = {"__key__": keys[i], "x.npy": encode_npy(latents[i])}
            if labels[i] != UNLABELLED:
                sample["cls"] = str(labels[i]).encode()
            out.append(sample)
        return out


def _encode_shard(
    encoder: _Encoder, url: str, expected: int | None, target: Path, batch_size: int, advance: Any
) -> None:
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    writer = wds.TarWriter(str(partial), encoder=False, compress=False, mtime=0)
    read = 0
    try:
        try:
            for raw in _batches(url, batch_size):
                for sample in encoder.samples(raw, url):
                    writer.write(sample)
                read += len(raw)
                advance(len(raw))
        except ShardError as error:
            what = f"sample '{error.key}' of shard" if error.key else "shard"
            raise AntError(
                f"corrupt or unreadable {what} {url} ({error.reason}): re-pack the images"
            ) from None
        if expected is not None and read != expected:
            raise AntError(
                f"shard {url} holds {read} samples but its meta.json lists {expected}: re-pack it"
            )
        writer.close()
        os.replace(partial, target)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise


def _settings(
    spec: str, vae: Vae, posterior: str, seed: int, flip: bool, dtype: str
) -> EncodeSettings:
    local = Path(spec).expanduser()
    source = str(local.resolve()) if local.exists() else spec
    return EncodeSettings(
        source=source,
        vae=vae.spec.name_or_path,
        subfolder=vae.spec.subfolder,
        scale=vae.scale,
        shift=vae.shift,
        factor=vae.factor,
        posterior=posterior,
        seed=seed,
        flip=flip,
        dtype=dtype,
        precision=vae.spec.precision,
    )


def encode_shards(
    shards: str,
    out: Path | str,
    vae_spec: VaeSpec,
    *,
    flip: bool = False,
    batch_size: int = 64,
    device: str = "auto",
    posterior: str = "sample",
    seed: int = 0,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
) -> DatasetMeta | None:
    """Encode the image shards ``shards`` into latent shards in ``out`` (see the module docs).

    Under torchrun every rank encodes its shards; rank 0 writes meta.json and returns it, the
    other ranks return ``None``.
    """
    if batch_size < 1:
        raise AntError(f"--batch-size must be at least 1, got {batch_size}")
    if dtype not in DTYPES:
        raise AntError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype}")
    runtime = Runtime.from_env(device)
    shard_set, source = _source(shards)
    height, width, _ = source.shape
    vae = Vae.load(vae_spec, runtime.device)
    if height % vae.factor or width % vae.factor:
        raise AntError(
            f"the images in {shards} are {height}x{width}, not divisible by the VAE's "
            f"downsampling factor {vae.factor}: re-pack them with --image-size a multiple of "
            f"{vae.factor}"
        )
    settings = _settings(shards, vae, posterior, seed, flip, dtype)
    out = Path(out)
    counts = shard_set.expected_counts()
    with runtime.process_group("gloo"):
        plan = _plan_output(out, settings, overwrite)
        runtime.barrier()
        if runtime.rank == 0:
            _prepare_output(out, settings, plan)
        runtime.barrier()
        mine = [
            i
            for i in runtime.shard(range(len(shard_set.urls)))
            if not (out / shard_name(i)).is_file()
        ]
        total = sum(counts[i] or 0 for i in mine)
        description = "encoding" + (
            f" (rank {runtime.rank} of {runtime.world_size})" if runtime.distributed else ""
        )
        encoder = _Encoder(vae, settings)
        bar = progress_bar(enabled=progress and runtime.rank == 0)
        with bar:
            task = bar.add_task(description, total=total)
            for i in mine:
                _encode_shard(
                    encoder,
                    shard_set.urls[i],
                    counts[i],
                    out / shard_name(i),
                    batch_size,
                    lambda n: bar.advance(task, n),
                )
        runtime.barrier()
    if runtime.rank != 0:
        return None
    return _finish(out, shard_set, source, settings, vae)


def _finish(
    out: Path, shard_set: ShardSet, source: DatasetMeta, settings: EncodeSettings, vae: Vae
) -> DatasetMeta:
    names = [shard_name(i) for i in range(len(shard_set.urls))]
    missing = [name for name in names if not (out / name).is_file()]
    if missing:
        raise AntError(
            f"{len(missing)} latent shard(s) are missing in {out} (first: {missing[0]}): run "
            "the same command again to finish them"
        )
    per_image = 2 if settings.flip else 1
    counts = [per_image * (count or 0) for count in shard_set.expected_counts()]
    height, width, channels = source.shape
    latent_c, latent_h, latent_w = vae.latent_shape((channels, height, width))
    meta = DatasetMeta(
        count=sum(counts),
        shape=[latent_h, latent_w, latent_c],
        classes=list(source.classes),
        source=shard_set.spec,
        shards=names,
        shard_counts=counts,
        image_size=None,
        format="npy",
        labelled=source.labelled,
        latent={
            **vae.describe(),
            "posterior": settings.posterior,
            "seed": settings.seed,
            "flip": settings.flip,
            "dtype": settings.dtype,
            "precision": settings.precision,
            "image_shape": [height, width, channels],
            "source_shards": settings.source,
            "source": source.source,
        },
    )
    write_meta(out, meta)
    (out / STATE_NAME).unlink(missing_ok=True)
    return read_meta(out)
