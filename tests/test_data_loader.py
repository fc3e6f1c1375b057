"""The shard loader on real packed data: exact round trips, seeding, splitting, corrupt shards."""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from ant.core.errors import AntError
from ant.data import UNLABELLED, make_loader, read_meta, write_array_shards
from ant.data.info import summarize
from ant.data.pack import pack
from ant.data.shards import iter_shard, resolve_shards
from ant.data.sources import open_source


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits packed into 4 shards (500, 500, 500, 297 samples)."""
    out = tmp_path_factory.mktemp("digits") / "shards"
    pack("digits", out, shard_size=500)
    return out


def load_all(
    shards: str, *, batch_size: int = 64, seed: int = 0, **options: Any
) -> dict[str, tuple[np.ndarray, int]]:
    """Every sample of one non-resampled pass: key -> (float array [C, H, W], label)."""
    loader = make_loader(
        shards,
        batch_size=batch_size,
        rank=0,
        world_size=1,
        seed=seed,
        resampled=False,
        shuffle_buffer=0,
        return_keys=True,
        **options,
    )
    loaded: dict[str, tuple[np.ndarray, int]] = {}
    for x, y, keys in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        for array, label, key in zip(x.numpy(), y.tolist(), keys, strict=True):
            assert key not in loaded
            loaded[key] = (array, label)
    return loaded


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Invert the loader's [-1, 1] mapping: [C, H, W] float to uint8 [H, W, C]."""
    assert array.min() >= -1.0 and array.max() <= 1.0
    pixels = np.rint((array.astype(np.float64) + 1.0) * 127.5)
    return pixels.astype(np.uint8).transpose(1, 2, 0)


def assert_round_trip(spec: str, out: Path, image_size: int | None = None, **options: Any) -> None:
    """Pack ``spec``, check the summary, and load every sample back bit-exactly."""
    meta = pack(spec, out, image_size=image_size, shard_size=4)
    expected = list(open_source(spec, image_size))
    summary = summarize(resolve_shards(str(out)))
    assert summary.count == len(expected) == meta.count
    assert summary.shape == list(expected[0][0].shape)
    loaded = load_all(str(out), **options)
    assert sorted(loaded) == [f"{i:08d}" for i in range(len(expected))]
    for index, (image, label) in enumerate(expected):
        array, loaded_label = loaded[f"{index:08d}"]
        np.testing.assert_array_equal(to_uint8(array), image)
        assert loaded_label == (UNLABELLED if label is None else label)


def write_image(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path)


def test_round_trip_digits(digits: Path) -> None:
    expected = list(open_source("digits"))
    loaded = load_all(str(digits), num_workers=2)
    assert len(loaded) == 1797
    for index, (image, label) in enumerate(expected):
        array, loaded_label = loaded[f"{index:08d}"]
        np.testing.assert_array_equal(to_uint8(array), image)
        assert loaded_label == label


def test_round_trip_digits_resized(tmp_path: Path) -> None:
    assert_round_trip("digits", tmp_path / "out", image_size=12)


def test_round_trip_folder_with_classes(tmp_path: Path) -> None:
    sizes = [(40, 30), (30, 40), (64, 64), (17, 23), (50, 21)]
    for index, size in enumerate(sizes):
        write_image(
            tmp_path / "src" / ("cat", "dog", "eel")[index % 3] / f"{index}.png", size, index
        )
    write_image(tmp_path / "src" / "dog" / "grey.png", (31, 31), 9, mode="L")
    assert_round_trip(f"folder:{tmp_path / 'src'}", tmp_path / "out", image_size=16, num_workers=1)
    assert read_meta(tmp_path / "out").classes == ["cat", "dog", "eel"]


def test_round_trip_flat_folder(tmp_path: Path) -> None:
    for index in range(6):
        write_image(tmp_path / "src" / f"{index}.png", (9, 7), index)
    assert_round_trip(f"folder:{tmp_path / 'src'}", tmp_path / "out")
    assert read_meta(tmp_path / "out").labelled is False


@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.parametrize("channels", [None, 3])
def test_round_trip_npz(tmp_path: Path, labelled: bool, channels: int | None) -> None:
    rng = np.random.default_rng(1)
    shape = (11, 5, 6) if channels is None else (11, 5, 6, channels)
    arrays: dict[str, np.ndarray] = {"x": rng.integers(0, 256, size=shape, dtype=np.uint8)}
    if labelled:
        arrays["y"] = rng.integers(0, 4, size=11)
    np.savez(tmp_path / "data.npz", **arrays)  # type: ignore[arg-type]
    assert_round_trip(f"npz:{tmp_path / 'data.npz'}", tmp_path / "out")


@pytest.mark.parametrize("labelled", [True, False])
def test_round_trip_latent_arrays(tmp_path: Path, labelled: bool) -> None:
    rng = np.random.default_rng(2)
    latents = rng.standard_normal((13, 4, 3, 3)).astype(np.float32)
    labels = [int(v) for v in rng.integers(0, 5, size=13)] if labelled else None
    meta = write_array_shards(latents, labels, tmp_path / "latents", shard_size=5)
    assert (meta.count, meta.shape, meta.format, len(meta.shards)) == (13, [3, 3, 4], "npy", 3)
    summary = summarize(resolve_shards(str(tmp_path / "latents")))
    assert summary.shape == [3, 3, 4] and summary.format == "npy"
    loaded = load_all(str(tmp_path / "latents"), batch_size=4)
    for index in range(13):
        array, label = loaded[f"{index:08d}"]
        np.testing.assert_array_equal(array, latents[index])
        assert label == (labels[index] if labels else UNLABELLED)


def test_brace_pattern_and_pipe_urls(digits: Path) -> None:
    pattern = str(digits / "shard-{000000..000003}.tar")
    assert resolve_shards(pattern).count == 1797
    assert len(load_all(pattern)) == 1797
    pipes = "::".join(f"pipe:cat {digits / f'shard-00000{i}.tar'}" for i in (1, 3))
    assert resolve_shards(pipes).count is None
    assert len(load_all(pipes)) == 797


def test_missing_shards_and_meta(tmp_path: Path) -> None:
    with pytest.raises(AntError, match="does not exist"):
        make_loader(str(tmp_path / "nope"), batch_size=2, rank=0, world_size=1, seed=0)
    with pytest.raises(AntError, match=r"no meta\.json"):
        make_loader(str(tmp_path), batch_size=2, rank=0, world_size=1, seed=0)


def test_resampled_epoch_length_is_exact(digits: Path) -> None:
    loader = make_loader(str(digits), batch_size=100, rank=0, world_size=1, seed=0, num_workers=2)
    assert len(loader) == 17
    batches = list(loader)
    assert len(batches) == 17 and all(x.shape == (100, 1, 8, 8) for x, _ in batches)
    short = make_loader(str(digits), batch_size=10, rank=1, world_size=3, seed=0, epoch_samples=95)
    assert len(list(short)) == len(short) == 3
    with pytest.raises(AntError, match="less than one global batch"):
        make_loader(str(digits), batch_size=1000, rank=0, world_size=2, seed=0)


def test_resampled_pattern_without_meta_needs_epoch_samples(digits: Path) -> None:
    with pytest.raises(AntError, match="epoch_samples"):
        make_loader(
            f"pipe:cat {digits / 'shard-000000.tar'}", batch_size=2, rank=0, world_size=1, seed=0
        )


def first_batches(
    digits: Path, *, seed: int, rank: int = 0, world_size: int = 1, num_workers: int = 0
) -> list[torch.Tensor]:
    """The first three resampled batches of the digits shards."""
    loader = make_loader(
        str(digits),
        batch_size=32,
        rank=rank,
        world_size=world_size,
        seed=seed,
        shuffle_buffer=200,
        num_workers=num_workers,
    )
    batches = []
    for x, _ in loader:
        batches.append(x)
        if len(batches) == 3:
            break
    return batches


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_seeded_reproducibility(digits: Path) -> None:
    reference = first_batches(digits, seed=7)
    assert same(reference, first_batches(digits, seed=7))
    assert not same(reference, first_batches(digits, seed=8))
    assert not same(reference, first_batches(digits, seed=7, rank=1, world_size=2))
    workers = first_batches(digits, seed=7, num_workers=2)
    assert same(workers, first_batches(digits, seed=7, num_workers=2))


def test_epochs_differ(digits: Path) -> None:
    loader = make_loader(str(digits), batch_size=32, rank=0, world_size=1, seed=0, epoch_samples=64)
    first, second = [torch.cat([x for x, _ in loader]) for _ in range(2)]
    assert not torch.equal(first, second)


def test_hflip_is_seeded_and_mirrors(digits: Path) -> None:
    plain = load_all(str(digits), batch_size=500)
    flipped = load_all(str(digits), batch_size=500, hflip=True, seed=3)
    assert flipped.keys() == plain.keys()
    mirrored = 0
    for key, (array, label) in flipped.items():
        original = plain[key][0]
        if not np.array_equal(array, original):
            np.testing.assert_array_equal(array, original[:, :, ::-1])
            mirrored += 1
        assert label == plain[key][1]
    assert 700 < mirrored < 1100
    again = load_all(str(digits), batch_size=500, hflip=True, seed=3)
    assert all(np.array_equal(again[k][0], flipped[k][0]) for k in flipped)


def test_more_workers_than_shards_are_clamped(tmp_path: Path, digits: Path) -> None:
    shutil.copy(digits / "shard-000003.tar", tmp_path / "only.tar")
    loader = make_loader(
        str(tmp_path / "only.tar"),
        batch_size=64,
        rank=0,
        world_size=1,
        seed=0,
        resampled=False,
        num_workers=2,
    )
    assert loader.num_workers == 1
    assert sum(len(y) for _, y in loader) == 297
    resampled = make_loader(
        str(tmp_path / "only.tar"),
        batch_size=64,
        rank=0,
        world_size=1,
        seed=0,
        epoch_samples=640,
        num_workers=2,
    )
    assert len(list(resampled)) == 10


def test_non_resampled_needs_a_shard_per_rank(digits: Path) -> None:
    with pytest.raises(AntError, match="cannot be split over 5 ranks"):
        make_loader(str(digits), batch_size=8, rank=0, world_size=5, seed=0, resampled=False)


def test_non_resampled_keeps_partial_batches(digits: Path) -> None:
    loader = make_loader(str(digits), batch_size=400, rank=0, world_size=1, seed=0, resampled=False)
    sizes = sorted(len(y) for _, y in loader)
    assert sum(sizes) == 1797 and sizes[0] == 197


@pytest.fixture
def corrupt(tmp_path: Path, digits: Path) -> Path:
    """A copy of the digits shards whose shard-000001.tar is truncated mid-file."""
    out = tmp_path / "corrupt"
    shutil.copytree(digits, out)
    data = (out / "shard-000001.tar").read_bytes()
    (out / "shard-000001.tar").write_bytes(data[: len(data) // 2 + 300])
    return out


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize("resampled", [True, False])
def test_truncated_shard_names_the_shard(corrupt: Path, num_workers: int, resampled: bool) -> None:
    loader = make_loader(
        str(corrupt),
        batch_size=64,
        rank=0,
        world_size=1,
        seed=0,
        resampled=resampled,
        num_workers=num_workers,
    )
    with pytest.raises(AntError) as info:
        list(loader)
    message = str(info.value)
    assert "\n" not in message
    assert "shard-000001.tar" in message and "skip_corrupt" in message


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_corrupt_keeps_good_samples(
    corrupt: Path, num_workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ant.data.loader"):
        loaded = load_all(str(corrupt), skip_corrupt=True, num_workers=num_workers)
    good = {f"{i:08d}" for i in range(1797) if not 500 <= i < 1000}
    assert good <= loaded.keys()
    assert 0 < len(loaded.keys() - good) < 500
    assert all(key.startswith("0000") for key in loaded)
    assert "shard-000001.tar" in caplog.text


def test_skip_corrupt_counts_the_bad_shard(corrupt: Path) -> None:
    loader = make_loader(
        str(corrupt),
        batch_size=64,
        rank=0,
        world_size=1,
        seed=0,
        resampled=False,
        skip_corrupt=True,
        num_workers=1,
    )
    list(loader)
    skipped = [(Path(s.url).name, s.key) for s in loader.skipped]
    assert ("shard-000001.tar", None) in skipped
    assert {name for name, _ in skipped} == {"shard-000001.tar"}


def test_garbage_shard(tmp_path: Path, digits: Path) -> None:
    shutil.copy(digits / "shard-000000.tar", tmp_path / "good.tar")
    (tmp_path / "junk.tar").write_bytes(np.random.default_rng(0).bytes(3000))
    spec = f"{tmp_path / 'good.tar'}::{tmp_path / 'junk.tar'}"
    with pytest.raises(AntError, match=r"junk\.tar \(ReadError"):
        load_all(spec)
    loader = make_loader(
        spec, batch_size=50, rank=0, world_size=1, seed=0, resampled=False, skip_corrupt=True
    )
    assert sum(len(y) for _, y in loader) == 500
    assert len(loader.skipped) == 1 and loader.skipped[0].url.endswith("junk.tar")


def test_all_shards_corrupt_in_resampled_mode_stops(tmp_path: Path) -> None:
    (tmp_path / "junk.tar").write_bytes(b"junk" * 300)
    loader = make_loader(
        str(tmp_path / "junk.tar"),
        batch_size=4,
        rank=0,
        world_size=1,
        seed=0,
        epoch_samples=8,
        skip_corrupt=True,
    )
    with pytest.raises(AntError, match="no readable samples"):
        list(loader)


def test_undecodable_sample_is_named_or_skipped(tmp_path: Path, digits: Path) -> None:
    good = next(iter_shard(str(digits / "shard-000000.tar")))
    with wds.TarWriter(str(tmp_path / "s.tar"), encoder=False) as writer:
        writer.write({"__key__": "00000000", "png": good["png"], "cls": good["cls"]})
        writer.write({"__key__": "broken", "png": b"not a png", "cls": b"1"})
    with pytest.raises(AntError, match=r"sample 'broken' of shard .*s\.tar"):
        load_all(str(tmp_path / "s.tar"))
    loader = make_loader(
        str(tmp_path / "s.tar"),
        batch_size=4,
        rank=0,
        world_size=1,
        seed=0,
        resampled=False,
        skip_corrupt=True,
    )
    assert sum(len(y) for _, y in loader) == 1
    assert [s.key for s in loader.skipped] == ["broken"]


def test_worker_stream_pickles_for_spawned_workers(digits: Path) -> None:
    loader = make_loader(str(digits), batch_size=500, rank=0, world_size=1, seed=0, resampled=False)
    stream = pickle.loads(pickle.dumps(loader.stream))
    items = [pickle.loads(pickle.dumps(item)) for item in stream]
    assert sum(len(item.batch[1]) for item in items if item.batch is not None) == 1797


def test_failing_pipe_url_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.tar"
    # Whether the pipe's exit status or the empty stream is noticed first depends on timing.
    failure = "pipe command exited with status 1|ReadError: empty file"
    with pytest.raises(AntError, match=failure) as info:
        load_all(f"pipe:cat {missing} 2>/dev/null")
    assert "\n" not in str(info.value) and str(missing) in str(info.value)
