"""What sampling needs to know about a denoiser: its sample shape and its classes."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ant.models.denoiser import Denoiser, missing_members


@dataclass(frozen=True)
class ModelInfo:
    """The sample shape and class conditioning of a model.

    Read from the model's :class:`~ant.models.denoiser.Denoiser` attributes; ``num_classes``
    0 means an unconditional model, ``null_label`` ``None`` one without a null label for
    guidance.
    """

    channels: int
    size: int
    num_classes: int
    null_label: int | None

    @classmethod
    def of(cls, model: nn.Module) -> ModelInfo:
        """The info of ``model``; ``ValueError`` naming what it lacks if it is no Denoiser."""
        missing = missing_members(model)
        if missing or not isinstance(model, Denoiser):
            raise ValueError(
                f"{type(model).__name__} is not a Denoiser (ant.models.denoiser): it lacks "
                f"{', '.join(missing) or 'forward'}"
            )
        return cls(
            channels=model.in_channels,
            size=model.input_size,
            num_classes=model.num_classes,
            null_label=model.null_label,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """One sample's shape ``(C, H, W)``."""
        return (self.channels, self.size, self.size)

    @property
    def conditional(self) -> bool:
        """Whether the model takes class labels."""
        return self.num_classes > 0
