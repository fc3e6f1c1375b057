"""Data sources for ``ant data pack``: the interface, source specs, and the built-in sources.

A source spec is ``NAME`` or ``NAME:ARG`` (split at the first colon), for example ``digits``,
``folder:/data/imagenet/train`` or ``npz:cifar.npz``. ``NAME`` is looked up in the
``data_source`` registry, whose factories are called as ``factory(arg=ARG, image_size=S)``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from ant.core.errors import AntError
from ant.data.images import adm_center_crop, from_pil, resize_square, to_pil

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
IMAGE_CHANNELS = (1, 3, 4)


@runtime_checkable
class DataSource(Protocol):
    """What a data-source factory returns.

    Iterating yields ``(image, label)``: ``image`` is a uint8 array ``[H, W, C]`` with C in
    1, 3 or 4, and ``label`` an index into :attr:`classes`, or ``None`` for unlabelled data
    (then :attr:`classes` is empty). ``len()`` is the number of samples; ``ant data pack``
    uses it only for the progress bar, so a source without ``__len__`` works too.
    """

    classes: list[str]
    description: str

    def __iter__(self) -> Iterator[tuple[np.ndarray, int | None]]: ...

    def __len__(self) -> int: ...


def parse_source_spec(spec: str) -> tuple[str, str | None]:
    """Split ``NAME`` or ``NAME:ARG`` at the first colon into ``(NAME, ARG or None)``."""
    name, sep, arg = spec.partition(":")
    if not name:
        raise AntError(f"bad data source '{spec}': write NAME or NAME:ARG, e.g. folder:/data/train")
    if sep and not arg:
        raise AntError(f"bad data source '{spec}': nothing after the colon; write {name}:ARG")
    return name, (arg if sep else None)


def open_source(spec: str, image_size: int | None = None) -> DataSource:
    """Build the data source named by ``spec`` through the ``data_source`` plugin registry."""
    from ant.core.plugins import registry

    name, arg = parse_source_spec(spec)
    source: DataSource = registry("data_source").get(name).build(arg=arg, image_size=image_size)
    return source


def _check_image_size(image_size: int | None) -> None:
    if image_size is not None and image_size < 1:
        raise AntError(f"image size must be a positive number of pixels, got {image_size}")


def _existing_path(arg: str | None, name: str, *, directory: bool) -> Path:
    kind = "folder" if directory else "file"
    if arg is None:
        raise AntError(f"data source '{name}' needs a path: write {name}:PATH")
    path = Path(arg).expanduser()
    if not path.exists():
        raise AntError(f"{kind} '{path}' does not exist: check the path in '{name}:{arg}'")
    if directory != path.is_dir():
        raise AntError(f"'{path}' is not a {kind}: '{name}:PATH' needs a {kind}")
    return path


class DigitsSource:
    """scikit-learn's bundled handwritten digits: 1,797 grey 8x8 images in 10 classes."""

    def __init__(self, arg: str | None = None, image_size: int | None = None) -> None:
        if arg is not None:
            raise AntError(
                f"data source 'digits' takes no argument: write 'digits', not 'digits:{arg}'"
            )
        _check_image_size(image_size)
        from sklearn.datasets import load_digits

        digits: Any = load_digits()
        self._images = np.rint(digits.images * 255 / 16).astype(np.uint8)[:, :, :, None]
        self._labels = [int(t) for t in digits.target]
        self._size = image_size
        self.classes = [str(n) for n in digits.target_names]
        side = image_size or self._images.shape[1]
        self.description = f"scikit-learn digits: {len(self)} grey {side}x{side} images, 10 classes"

    def __len__(self) -> int:
        return len(self._labels)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int | None]]:
        for image, label in zip(self._images, self._labels, strict=True):
            yield (resize_square(image, self._size) if self._size else image), label


def _is_image(path: Path) -> bool:
    return (
        path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )


class FolderSource:
    """Images in a folder: one sub-folder per class (ImageNet style), or flat and unlabelled.

    Images are converted to RGB. With ``image_size`` every image gets the ADM centre crop
    (:func:`ant.data.images.adm_center_crop`); without it all images must share one size.
    """

    def __init__(self, arg: str | None = None, image_size: int | None = None) -> None:
        _check_image_size(image_size)
        root = _existing_path(arg, "folder", directory=True)
        class_dirs = [
            d
            for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith(".") and any(map(_is_image, d.rglob("*")))
        ]
        flat = sorted(p for p in root.iterdir() if _is_image(p))
        if class_dirs and flat:
            raise AntError(
                f"folder '{root}' has images both at the top and in class sub-folders: "
                "move the top-level images into a class folder, or point at a flat folder"
            )
        self._files: list[tuple[Path, int | None]]
        if class_dirs:
            self.classes = [d.name for d in class_dirs]
            self._files = [
                (path, label)
                for label, d in enumerate(class_dirs)
                for path in sorted(filter(_is_image, d.rglob("*")))
            ]
        elif flat:
            self.classes = []
            self._files = [(path, None) for path in flat]
        else:
            raise AntError(
                f"no images found in folder '{root}' (looked for {', '.join(IMAGE_SUFFIXES)}): "
                "point folder:PATH at a folder of images or of class sub-folders"
            )
        self._root = root
        self._size = image_size
        labels = f"{len(self.classes)} classes" if self.classes else "unlabelled"
        self.description = f"folder {root}: {len(self)} images, {labels}"

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int | None]]:
        first: tuple[int, int] | None = None
        for path, label in self._files:
            pil = self._read(path)
            if self._size:
                pil = adm_center_crop(pil, self._size)
            elif first is None:
                first = pil.size
            elif pil.size != first:
                raise AntError(
                    f"image '{path}' is {pil.width}x{pil.height} but earlier images are "
                    f"{first[0]}x{first[1]}: pass --image-size S to centre-crop all to SxS"
                )
            yield from_pil(pil, 3), label

    @staticmethod
    def _read(path: Path) -> Image.Image:
        try:
            with Image.open(path) as pil:
                return pil.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise AntError(f"cannot read image '{path}' ({exc}): fix or remove the file") from exc


class NpzSource:
    """A NumPy .npz file: uint8 images ``x`` [N,H,W] or [N,H,W,C] and optional int labels ``y``.

    With ``image_size`` every image gets the ADM centre crop to that size. Classes are named
    ``"0"`` to ``str(max(y))``.
    """

    def __init__(self, arg: str | None = None, image_size: int | None = None) -> None:
        _check_image_size(image_size)
        path = _existing_path(arg, "npz", directory=False)
        try:
            with np.load(path) as arrays:
                names = list(arrays.files)
                if "x" not in names:
                    found = ", ".join(names) or "no arrays"
                    raise AntError(
                        f"'{path}' has no array 'x' (found {found}): save the images as "
                        "np.savez(path, x=images, y=labels)"
                    )
                x = arrays["x"]
                y = arrays["y"] if "y" in names else None
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise AntError(f"cannot read '{path}' as .npz ({exc}): save it with np.savez") from exc
        self._images = self._check_images(path, x)
        self._labels = None if y is None else self._check_labels(path, y, len(x))
        self.classes = (
            [] if self._labels is None else [str(i) for i in range(max(self._labels) + 1)]
        )
        self._size = image_size
        labels = f"{len(self.classes)} classes" if self.classes else "unlabelled"
        self.description = f"npz {path}: {len(self)} images, {labels}"

    @staticmethod
    def _check_images(path: Path, x: np.ndarray) -> np.ndarray:
        if x.dtype != np.uint8:
            raise AntError(
                f"'{path}': x has dtype {x.dtype}, expected uint8 in 0..255: "
                "save x.astype(np.uint8)"
            )
        if x.ndim == 3:
            x = x[:, :, :, None]
        if x.ndim != 4 or x.shape[3] not in IMAGE_CHANNELS or len(x) == 0:
            raise AntError(
                f"'{path}': x has shape {list(x.shape)}, expected [N,H,W] or [N,H,W,C] with N > 0 "
                "and C in 1, 3, 4"
            )
        return x

    @staticmethod
    def _check_labels(path: Path, y: np.ndarray, count: int) -> list[int]:
        if y.ndim != 1 or len(y) != count or not np.issubdtype(y.dtype, np.integer):
            raise AntError(
                f"'{path}': y has shape {list(y.shape)} and dtype {y.dtype}, expected {count} "
                "integer labels"
            )
        if count and int(y.min()) < 0:
            raise AntError(f"'{path}': y has negative labels; use labels 0..num_classes-1")
        return [int(v) for v in y]

    def __len__(self) -> int:
        return len(self._images)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int | None]]:
        channels = self._images.shape[3]
        for index, image in enumerate(self._images):
            label = None if self._labels is None else self._labels[index]
            if self._size:
                image = from_pil(adm_center_crop(to_pil(image), self._size), channels)
            yield image, label
