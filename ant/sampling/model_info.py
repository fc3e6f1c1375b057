"""What sampling needs to know about a denoiser: its sample shape and its classes."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """The sample shape and class conditioning of a model.

    Read from the model's ``in_channels``, ``input_size``, ``num_classes`` and ``null_label``
    attributes (those of :class:`~ant.models.dit.DiT`); ``num_classes`` 0 or missing means an
    unconditional model, ``null_label`` ``None`` a model without a null label for guidance.
    """

    channels: int
    size: int
    num_classes: int
    null_label: int | None

    @classmethod
    def of(cls, model: nn.Module) -> ModelInfo:
        """The info of ``model``; ``ValueError`` if it does not say its input shape."""
        channels = getattr(model, "in_channels", None)
        size = getattr(model, "input_size", None)
        if not isinstance(channels, int) or not isinstance(size, int):
            raise ValueError(
                f"{type(model).__name__} has no int attributes in_channels and input_size"
            )
        null_label = getattr(model, "null_label", None)
        return cls(
            channels=channels,
            size=size,
            num_classes=int(getattr(model, "num_classes", 0) or 0),
            null_label=null_label if isinstance(null_label, int) else None,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """One sample's shape ``(C, H, W)``."""
        return (self.channels, self.size, self.size)

    @property
    def conditional(self) -> bool:
        """Whether the model takes class labels."""
        return self.num_classes > 0
