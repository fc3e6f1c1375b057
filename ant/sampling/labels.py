"""Class labels of samples: cycling through the classes by sample index, or one fixed class."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ant.core.errors import AntError


def check_class_label(class_label: int | None, num_classes: int) -> None:
    """Raise :class:`AntError` unless ``class_label`` is ``None`` or a class of the model."""
    if class_label is None:
        return
    if num_classes == 0:
        raise AntError(f"class {class_label} given, but the model is unconditional (no classes)")
    if not 0 <= class_label < num_classes:
        raise AntError(
            f"class {class_label} is out of range: the model has {num_classes} classes "
            f"(0..{num_classes - 1})"
        )


def class_labels(
    indices: Sequence[int], num_classes: int, class_label: int | None = None
) -> torch.Tensor | None:
    """The label of each sample index: ``class_label`` if given, else ``index % num_classes``.

    Cycling makes a grid show every class in order. ``None`` for an unconditional model
    (``num_classes`` 0).
    """
    check_class_label(class_label, num_classes)
    if num_classes == 0:
        return None
    if class_label is not None:
        return torch.full((len(indices),), class_label, dtype=torch.long)
    return torch.tensor([i % num_classes for i in indices], dtype=torch.long)
