"""The Denoiser protocol: what every registered model is to training, sampling and evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@runtime_checkable
class Denoiser(Protocol):
    """A network ``(x_t, t, y) -> prediction`` over images of one shape, optionally class-
    conditional.

    ``forward(x, t, y)`` takes noisy inputs ``[B, in_channels, input_size, input_size]``,
    timesteps ``[B]`` (original indices 0..T-1) and labels ``[B]`` (``None``: the null label for
    the whole batch), and returns ``[B, out_channels, H, W]``: the prediction in the first
    ``in_channels`` channels, then the variance interpolation v when ``learn_sigma``
    (``out_channels = 2 in_channels``; Nichol & Dhariwal 2021, Eq. 15). ``num_classes`` 0 is
    an unconditional model; ``null_label`` is the label index of the empty class ∅ that
    classifier-free guidance needs, ``None`` when the model was trained without label dropout.
    The DiT and ADM families implement it, and so must a plugin's model: a test builds every
    registered model and checks it.
    """

    in_channels: int
    out_channels: int
    input_size: int
    num_classes: int
    learn_sigma: bool

    @property
    def null_label(self) -> int | None:
        """The index of the null label ∅, or ``None``."""
        ...

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The prediction for ``x`` at timesteps ``t`` and labels ``y``."""
        ...


def missing_members(model: object) -> list[str]:
    """The :class:`Denoiser` attributes ``model`` lacks or holds with the wrong type."""
    wanted: dict[str, tuple[type, ...]] = {
        "in_channels": (int,),
        "out_channels": (int,),
        "input_size": (int,),
        "num_classes": (int,),
        "learn_sigma": (bool,),
        "null_label": (int, type(None)),
    }
    missing = [
        name
        for name, types in wanted.items()
        if not hasattr(model, name) or not isinstance(getattr(model, name), types)
    ]
    if not callable(getattr(model, "forward", None)):
        missing.append("forward")
    return missing
