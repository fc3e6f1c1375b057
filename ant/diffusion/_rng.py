"""Standard normal draws from an optional generator, on any device."""

from __future__ import annotations

import torch


def standard_normal(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """N(0, I) noise of ``shape`` on ``device``.

    With a generator the noise is drawn on the generator's device and then moved, so a CPU
    generator gives the same numbers whatever device the samples live on, and a CUDA generator
    draws directly on the GPU. Without one, torch's global generator for ``device`` is used.
    """
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return noise.to(device)
