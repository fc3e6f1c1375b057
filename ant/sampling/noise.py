"""Per-sample random streams: a sample's noise depends only on the seed and its index.

Each sample draws its starting noise and every step's noise from its own CPU generator, so a
sample is the same whichever batch (or process, or device) produces it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index``'s generator: 63 bits of a BLAKE2b hash of seed and index."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SampleNoise:
    """Standard normal noise for a batch of samples, one independent generator per sample."""

    def __init__(self, seed: int, indices: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(sample_seed(seed, i)) for i in indices]

    def draw(self, shape: Sequence[int], device: torch.device | str) -> torch.Tensor:
        """The next draw of every sample, stacked to ``[B, *shape]`` on ``device``."""
        draws = [torch.randn(tuple(shape), generator=g) for g in self.generators]
        return torch.stack(draws).to(device)
