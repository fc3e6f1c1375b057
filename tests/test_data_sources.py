"""Data sources: spec parsing, the built-in sources on real data, and the ADM centre crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from ant.core.errors import AntError
from ant.data.images import adm_center_crop, decode_image, encode_png
from ant.data.sources import DataSource, open_source, parse_source_spec


def write_image(path: Path, size: tuple[int, int], seed: int) -> np.ndarray:
    """Write a random RGB image of ``size`` (width, height) and return its pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("digits", ("digits", None)),
        ("folder:/data/train", ("folder", "/data/train")),
        ("npz:C:/x.npz", ("npz", "C:/x.npz")),
    ],
)
def test_parse_source_spec_splits_at_the_first_colon(
    spec: str, expected: tuple[str, str | None]
) -> None:
    assert parse_source_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", ":x", "folder:"])
def test_parse_source_spec_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(AntError, match="data source"):
        parse_source_spec(spec)


def test_unknown_source_suggests_the_closest_name() -> None:
    with pytest.raises(AntError, match="did you mean 'digits'"):
        open_source("digit")


def test_digits_maps_0_16_to_uint8() -> None:
    source = open_source("digits")
    assert isinstance(source, DataSource)
    assert len(source) == 1797
    assert source.classes == [str(i) for i in range(10)]
    items = list(source)
    reference = load_digits()
    image, label = items[5]
    assert image.shape == (8, 8, 1) and image.dtype == np.uint8
    expected = np.array([[round(v * 255 / 16) for v in row] for row in reference.images[5]])
    np.testing.assert_array_equal(image[:, :, 0], expected)
    assert label == int(reference.target[5])
    assert {int(img.max()) for img, _ in items} <= set(range(256))


def test_digits_image_size_resizes_bicubic() -> None:
    image, _ = next(iter(open_source("digits", image_size=16)))
    assert image.shape == (16, 16, 1)
    first, _ = next(iter(open_source("digits")))
    pil = Image.fromarray(first[:, :, 0]).resize((16, 16), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(image[:, :, 0], np.asarray(pil))


def test_digits_takes_no_argument() -> None:
    with pytest.raises(AntError, match="takes no argument"):
        open_source("digits:foo")


def test_folder_with_class_subfolders(tmp_path: Path) -> None:
    write_image(tmp_path / "dog" / "a.png", (40, 30), 1)
    write_image(tmp_path / "cat" / "b.png", (20, 50), 2)
    write_image(tmp_path / "cat" / "nested" / "c.jpg", (33, 33), 3)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    source = open_source(f"folder:{tmp_path}", image_size=16)
    assert source.classes == ["cat", "dog"]
    items = list(source)
    assert [label for _, label in items] == [0, 0, 1]
    assert all(image.shape == (16, 16, 3) for image, _ in items)


def test_folder_flat_is_unlabelled_and_exact(tmp_path: Path) -> None:
    pixels = [write_image(tmp_path / f"{i}.png", (12, 10), i) for i in range(3)]
    source = open_source(f"folder:{tmp_path}")
    assert source.classes == []
    items = list(source)
    assert [label for _, label in items] == [None, None, None]
    for (image, _), expected in zip(items, pixels, strict=True):
        np.testing.assert_array_equal(image, expected)


def test_folder_converts_grey_to_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((6, 6), 77, np.uint8)).save(tmp_path / "g.png")
    image, _ = next(iter(open_source(f"folder:{tmp_path}")))
    assert image.shape == (6, 6, 3) and (image == 77).all()


def test_folder_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", (12, 10), 1)
    write_image(tmp_path / "b.png", (10, 12), 2)
    with pytest.raises(AntError, match="--image-size"):
        list(open_source(f"folder:{tmp_path}"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("folder", "needs a path"),
        ("folder:/no/such/dir", "does not exist"),
    ],
)
def test_folder_bad_paths(spec: str, message: str) -> None:
    with pytest.raises(AntError, match=message):
        open_source(spec)


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(AntError, match="no images found"):
        open_source(f"folder:{tmp_path}")


def test_folder_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(AntError, match=r"cannot read image .*broken\.png"):
        list(open_source(f"folder:{tmp_path}"))


def test_npz_with_and_without_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(5, 6, 7), dtype=np.uint8)
    np.savez(tmp_path / "grey.npz", x=x, y=np.array([0, 3, 1, 1, 2]))
    source = open_source(f"npz:{tmp_path / 'grey.npz'}")
    assert source.classes == ["0", "1", "2", "3"]
    items = list(source)
    np.testing.assert_array_equal(np.stack([image for image, _ in items])[:, :, :, 0], x)
    assert [label for _, label in items] == [0, 3, 1, 1, 2]
    rgb = rng.integers(0, 256, size=(2, 9, 9, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x=rgb)
    unlabelled = open_source(f"npz:{tmp_path / 'rgb.npz'}", image_size=4)
    assert unlabelled.classes == []
    assert [(image.shape, label) for image, label in unlabelled] == [((4, 4, 3), None)] * 2


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 4, 4), np.float32)}, "uint8"),
        ({"images": np.zeros((2, 4, 4), np.uint8)}, "no array 'x'"),
        ({"x": np.zeros((2, 4, 4, 2), np.uint8)}, "expected"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0])}, "2 integer labels"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, -1])}, "negative"),
    ],
)
def test_npz_bad_content(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(AntError, match=message):
        open_source(f"npz:{tmp_path / 'bad.npz'}")


def test_npz_not_an_npz_file(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_text("garbage")
    with pytest.raises(AntError, match="cannot read"):
        open_source(f"npz:{tmp_path / 'x.npz'}")


def test_adm_center_crop_box_halves_then_bicubic() -> None:
    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 256, size=(100, 260, 3), dtype=np.uint8))
    out = adm_center_crop(pil, 24)
    assert out.size == (24, 24)
    halved = pil.resize((130, 50), Image.Resampling.BOX).resize((65, 25), Image.Resampling.BOX)
    scaled = halved.resize((62, 24), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(scaled)[:, 19:43])


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_round_trip_is_lossless(channels: int) -> None:
    rng = np.random.default_rng(channels)
    image = rng.integers(0, 256, size=(5, 7, channels), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(encode_png(image)), image)
