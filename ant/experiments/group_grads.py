"""Training gradients of timestep groups over real samples (Go et al. 2023, Sec. 3, Fig. 1).

The gradient of group g is ``g_g = (1/N) sum_n grad L(x0_n, t_{n,g}, eps_{n,g})``: every sample
n gets, for every group, its own timestep drawn uniformly inside the group and its own noise,
from a generator seeded by ``(seed, n, g)`` only, so the draws are the same for every
checkpoint, batch size and group block. ``L`` is the per-sample training loss of the model's
diffusion (the MSE, plus the variational-bound term with a learned variance: the hybrid loss).
A recipe's per-timestep loss weighting is left out: it rescales each timestep's gradient, which
a cosine ignores (exactly so for groups of one timestep).

Gradients of a block of groups come from one ``vmap(grad(...))`` pass with the group as the
chunk dimension (:func:`ant.training.task_grads.task_grads_vmap`); the ``[block, P]`` results
are summed over the sample batches and then reduced once (sketched, or kept whole), so gradient
memory peaks at about ``3 x block x P`` floats (running sum, new gradients, the per-parameter
pieces they are joined from) plus the reduced accumulator, and activations are those of
``block x batch`` samples.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ant.diffusion import GaussianDiffusion
from ant.training.task_grads import task_grads_vmap

Reduce = Callable[[torch.Tensor], torch.Tensor]
"""Maps a ``[k, P]`` block of gradients to ``[k, D]`` (a sketch, or the identity)."""


def draw_seed(seed: int, sample: int, group: int) -> int:
    """The seed of the draws of ``sample`` in ``group``: 63 bits of a BLAKE2b hash."""
    digest = hashlib.blake2b(f"{seed}:{sample}:{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def group_inputs(
    seed: int,
    samples: Sequence[int],
    groups: Sequence[int],
    bounds: Sequence[tuple[int, int]],
    shape: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps ``[k, n]`` (int64) and noise ``[k, n, *shape]`` for k groups and n samples.

    ``t`` is uniform in the group's inclusive bounds and the noise is N(0, I), both drawn on the
    CPU from the generator of :func:`draw_seed` (timestep first, then noise).
    """
    steps = torch.empty(len(groups), len(samples), dtype=torch.long)
    noise = torch.empty(len(groups), len(samples), *shape)
    for row, group in enumerate(groups):
        start, end = bounds[group]
        for col, sample in enumerate(samples):
            generator = torch.Generator().manual_seed(draw_seed(seed, sample, group))
            offset = torch.randint(0, end - start + 1, (1,), generator=generator)
            steps[row, col] = start + offset
            noise[row, col] = torch.randn(tuple(shape), generator=generator)
    return steps, noise


@dataclass(frozen=True)
class GroupGradients:
    """Summed reduced group gradients ``[G, D]`` and each group's mean training loss ``[G]``."""

    vectors: torch.Tensor
    loss: torch.Tensor


def accumulate_group_gradients(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    x0: torch.Tensor,
    y: torch.Tensor | None,
    bounds: Sequence[tuple[int, int]],
    *,
    reduce: Reduce,
    seed: int,
    batch_size: int,
    group_block: int,
    device: torch.device,
    advance: Callable[[], None] | None = None,
) -> GroupGradients:
    """The reduced mean gradient of every group over the N samples ``x0`` (labels ``y``).

    ``model`` must be on ``device`` in the mode wanted (eval, or train for label dropout);
    ``x0`` (``[N, C, H, W]``) is moved there whole. Groups go in blocks of ``group_block``
    and, within a block, samples in batches of ``batch_size``; ``advance`` is called after each
    (block, batch). A block's full gradients are summed over the batches and reduced once, so
    row g of the result is ``reduce(g_g)`` and the reduction costs O(G P) in all.
    """
    if batch_size < 1 or group_block < 1:
        raise ValueError("batch_size and group_block must be >= 1")
    num_samples, num_groups = x0.shape[0], len(bounds)
    shape = tuple(x0.shape[1:])

    def chunk_loss(
        call: Callable[..., torch.Tensor],
        x0_c: torch.Tensor,
        x_t_c: torch.Tensor,
        t_c: torch.Tensor,
        y_c: torch.Tensor | None,
        noise_c: torch.Tensor,
    ) -> tuple[torch.Tensor, Any]:
        output = call(x_t_c, t_c, y_c)
        per = diffusion.training_losses(output.float(), x0_c, x_t_c, t_c, noise_c).loss
        return per.sum() / num_samples, per.detach()

    x0, y = x0.to(device), None if y is None else y.to(device)
    total: torch.Tensor | None = None
    loss = torch.zeros(num_groups, dtype=torch.float64, device=device)
    for low in range(0, num_groups, group_block):
        groups = range(low, min(low + group_block, num_groups))
        block: torch.Tensor | None = None
        for first in range(0, num_samples, batch_size):
            samples = range(first, min(first + batch_size, num_samples))
            t, noise = group_inputs(seed, samples, groups, bounds, shape)
            t, noise = t.to(device), noise.to(device)
            k, n = len(groups), len(samples)
            x0_k = x0[first : samples.stop].unsqueeze(0).expand(k, n, *shape)
            x_t = diffusion.q_sample(
                x0_k.reshape(k * n, *shape), t.reshape(-1), noise.reshape(k * n, *shape)
            ).reshape(k, n, *shape)
            y_k = None if y is None else y[first : samples.stop].unsqueeze(0).expand(k, n)
            grads, per = task_grads_vmap(model, chunk_loss, [x0_k, x_t, t, y_k, noise])
            block = grads if block is None else block.add_(grads)
            del grads
            loss[low : groups.stop] += per.sum(dim=1).double()
            if advance is not None:
                advance()
        if block is None:
            raise ValueError("no samples to take gradients over")
        reduced = reduce(block)
        del block
        if total is None:
            total = torch.zeros(num_groups, reduced.shape[1], device=device)
        total[low : groups.stop] = reduced
    if total is None:
        raise ValueError("no groups to take gradients of")
    return GroupGradients(vectors=total, loss=(loss / num_samples).cpu())
