"""``ant data pack`` and ``ant data info`` as a user runs them, error paths included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from ant.cli import cli

from .helpers import assert_one_line_error


def ant(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "digits"
    result = ant("data", "pack", "digits", str(out), "--shard-size", "1000")
    assert result.exit_code == 0, result.output
    assert "packed 1797 samples" in result.stdout
    return out


def test_pack_writes_shards_and_meta(packed: Path) -> None:
    meta = json.loads((packed / "meta.json").read_text())
    assert meta["count"] == 1797
    assert meta["shape"] == [8, 8, 1] and meta["channels"] == 1
    assert meta["classes"] == [str(i) for i in range(10)] and meta["num_classes"] == 10
    assert meta["labelled"] is True and meta["source"] == "digits"
    assert meta["shards"] == ["shard-000000.tar", "shard-000001.tar"]
    assert meta["shard_counts"] == [1000, 797]
    assert meta["image_size"] is None and meta["format"] == "png"
    assert sorted(p.name for p in packed.iterdir()) == ["meta.json", *meta["shards"]]


def test_info_prints_count_shape_classes_and_shards(packed: Path) -> None:
    result = ant("data", "info", str(packed))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "1797" in out
    assert "8 x 8 x 1" in out
    assert "10: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in out
    assert "shard-000000.tar" in out and "shard-000001.tar" in out


def test_info_verify_reads_every_sample(packed: Path) -> None:
    result = ant("data", "info", str(packed), "--verify")
    assert result.exit_code == 0, result.output
    assert "verified: 1797 samples in 2 shard(s)" in result.stdout


def test_info_on_a_brace_pattern(packed: Path) -> None:
    result = ant("data", "info", str(packed / "shard-{000000..000001}.tar"))
    assert result.exit_code == 0, result.output
    assert "1797" in result.stdout


def test_info_verify_names_the_corrupt_shard(packed: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in packed.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    data = (copy / "shard-000001.tar").read_bytes()
    (copy / "shard-000001.tar").write_bytes(data[: len(data) // 3 + 100])
    result = ant("data", "info", str(copy), "--verify")
    assert result.exit_code == 2
    assert "CORRUPT" in result.stdout
    assert_one_line_error(result.stderr, "shard-000001.tar", "verification failed")


def test_pack_npz_reports_unlabelled(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.zeros((3, 4, 4, 3), np.uint8))
    result = ant("data", "pack", f"npz:{tmp_path / 'x.npz'}", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "packed 3 samples (4x4x3, unlabelled)" in result.stdout
    result = ant("data", "info", str(tmp_path / "out"))
    assert "0 (unlabelled)" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["pack", "folder:/no/such/dir", "OUT"], ["/no/such/dir", "does not exist"]),
        (["pack", "npz:/no/such.npz", "OUT"], ["/no/such.npz", "does not exist"]),
        (["pack", "digit", "OUT"], ["unknown data_source 'digit'", "did you mean 'digits'"]),
        (["pack", "folder", "OUT"], ["needs a path", "folder:PATH"]),
        (["info", "/no/such/shards"], ["/no/such/shards", "does not exist"]),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, args: list[str], fragments: list[str]
) -> None:
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = ant("data", *args)
    assert result.exit_code == 2, result.output
    assert_one_line_error(result.stderr, *fragments)
    assert not (tmp_path / "out").exists()


def test_info_without_meta(tmp_path: Path) -> None:
    result = ant("data", "info", str(tmp_path))
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, "no meta.json", "ant data pack")


def test_non_empty_out_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    result = ant("data", "pack", "digits", str(out))
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, "not empty", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    result = ant("data", "pack", "digits", str(out), "--overwrite", "--image-size", "4")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "meta.json").read_text())["shape"] == [4, 4, 1]
    assert (out / "keep.txt").exists()


def test_failed_pack_leaves_no_complete_looking_output(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for index in range(5):
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(src / f"{index}.png")
    Image.fromarray(rng.integers(0, 256, (7, 6, 3), dtype=np.uint8)).save(src / "9.png")
    out = tmp_path / "out"
    result = ant("data", "pack", f"folder:{src}", str(out), "--shard-size", "2")
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, "9.png", "--image-size")
    assert list(out.iterdir()) == []
