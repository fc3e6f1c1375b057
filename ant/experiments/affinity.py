"""Task affinity between timestep groups: sketches, cosine matrices, and the gap correlation.

Go et al. (NeurIPS 2023, Sec. 3 and Fig. 1) measure the affinity of two denoising tasks by the
cosine similarity of their training gradients, ``A[i, j] = cos(g_i, g_j)``, and observe that it
falls as the gap between the noise levels grows (observation O1). This module holds the pure
parts of that computation:

* :func:`group_bounds`: G contiguous groups of T/G timesteps each;
* :class:`CountSketch`: a seeded sparse random projection ``S g`` of a P-dimensional gradient to
  D dimensions, so G gradients take ``G x D`` floats instead of ``G x P``. Inner products, and so
  cosines, are preserved in expectation with an error of about ``1 / sqrt(D)``
  (Johnson-Lindenstrauss; Charikar et al. 2002, Weinberger et al. 2009);
* :func:`cosine_matrix`: the cosine matrix of G (sketched or full) vectors;
* :func:`gap_spearman`: the rank correlation between the gap ``|i - j|`` and ``A[i, j]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

SEED_CHUNK = 1 << 24
"""Parameters whose sketch buckets and signs are drawn per call, to bound the temporaries."""


def group_bounds(num_timesteps: int, groups: int) -> list[tuple[int, int]]:
    """The inclusive ``(start, end)`` of G contiguous groups of ``T / G`` timesteps each.

    Groups must have equal widths, so the group matrix expands to a T x T one by repeating each
    entry over its block (:func:`ant.clustering.expand_affinity`). Raises ``ValueError`` unless
    ``2 <= G <= T`` and G divides T.
    """
    if not 2 <= groups <= num_timesteps or num_timesteps % groups != 0:
        divisors = [g for g in range(2, min(num_timesteps, 1000) + 1) if num_timesteps % g == 0]
        examples = ", ".join(str(g) for g in divisors[:8])
        raise ValueError(
            f"{groups} groups do not split {num_timesteps} timesteps evenly: choose a G that "
            f"divides {num_timesteps} (e.g. {examples})"
        )
    width = num_timesteps // groups
    return [(g * width, (g + 1) * width - 1) for g in range(groups)]


class CountSketch:
    """A count sketch ``S`` in ``R^{D x P}``: entry ``p`` of a vector goes to bucket ``h(p)``
    with sign ``s(p)`` (Charikar et al. 2002).

    ``S g`` costs O(P) and ``E[<S a, S b>] = <a, b>`` with variance at most
    ``(|a|^2 |b|^2 + <a, b>^2) / D``, so cosines of sketches estimate cosines of gradients to
    about ``1 / sqrt(D)``. The buckets (int32) and signs (int8) are drawn once from ``seed`` on
    the CPU and kept on ``device``: 5 bytes per parameter, the same numbers on any device. With
    ``D >= P`` no projection is needed and the sketch is the identity (exact).
    """

    def __init__(
        self, num_params: int, dim: int, seed: int, device: torch.device | str = "cpu"
    ) -> None:
        if num_params < 1 or dim < 1:
            raise ValueError(f"a sketch needs P >= 1 and D >= 1, got P={num_params}, D={dim}")
        self.num_params = num_params
        self.identity = dim >= num_params
        self.dim = num_params if self.identity else dim
        self.buckets: torch.Tensor | None = None
        self.signs: torch.Tensor | None = None
        if self.identity:
            return
        generator = torch.Generator().manual_seed(seed)
        buckets, signs = [], []
        for start in range(0, num_params, SEED_CHUNK):
            size = min(SEED_CHUNK, num_params - start)
            buckets.append(
                torch.randint(0, dim, (size,), generator=generator, dtype=torch.int32).to(device)
            )
            flips = torch.randint(0, 2, (size,), generator=generator, dtype=torch.int8)
            signs.append((flips * 2 - 1).to(device))
        self.buckets = torch.cat(buckets)
        self.signs = torch.cat(signs)

    def apply(self, vectors: torch.Tensor) -> torch.Tensor:
        """``vectors @ S^T``: rows of shape ``[k, P]`` to ``[k, D]`` (float32).

        The rows are multiplied by the signs in place (they are consumed), so the only extra
        memory is the ``[k, D]`` result.
        """
        if vectors.ndim != 2 or vectors.shape[1] != self.num_params:
            raise ValueError(
                f"expected vectors of shape [k, {self.num_params}], got {tuple(vectors.shape)}"
            )
        if self.buckets is None or self.signs is None:
            return vectors.float()
        signed = vectors.float().mul_(self.signs)
        out = torch.zeros(vectors.shape[0], self.dim, device=vectors.device, dtype=torch.float32)
        return out.index_add_(1, self.buckets, signed)


def cosine_matrix(vectors: torch.Tensor) -> np.ndarray:
    """The ``G x G`` cosine similarities of the rows of ``vectors`` (``[G, D]``), in float64.

    The Gram matrix is computed in float64; the diagonal is exactly 1. Raises ``ValueError`` if
    a row is zero or not finite (its direction is undefined).
    """
    rows = vectors.detach().to(torch.float64)
    gram = (rows @ rows.T).cpu().numpy()
    norms = np.sqrt(np.diag(gram))
    if not np.isfinite(gram).all() or not (norms > 0).all():
        bad = [int(i) for i in np.flatnonzero(~(np.isfinite(norms) & (norms > 0)))]
        raise ValueError(f"the gradients of groups {bad[:10]} are zero or not finite")
    cosine = gram / np.outer(norms, norms)
    np.fill_diagonal(cosine, 1.0)
    return np.clip(cosine, -1.0, 1.0)


def mean_matrix(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """The entrywise mean of same-shaped matrices (the paper averages over checkpoints)."""
    if not matrices:
        raise ValueError("no matrices to average")
    return np.mean(np.stack([np.asarray(m, dtype=np.float64) for m in matrices]), axis=0)


def gap_spearman(affinity: np.ndarray) -> float | None:
    """Spearman's rank correlation between ``|i - j|`` and ``A[i, j]`` over pairs ``i < j``.

    Observation O1 of Go et al. (2023) predicts a clearly negative value: tasks further apart
    in noise level have less similar gradients. ``None`` if it is undefined (fewer than two
    pairs, or constant affinities).
    """
    matrix = np.asarray(affinity, dtype=np.float64)
    rows, cols = np.triu_indices(matrix.shape[0], k=1)
    values = matrix[rows, cols]
    if values.size < 2 or np.ptp(values) == 0:
        return None
    from scipy.stats import spearmanr  # a second to import: only when it is used

    rho = float(spearmanr(cols - rows, values).statistic)
    return rho if math.isfinite(rho) else None
