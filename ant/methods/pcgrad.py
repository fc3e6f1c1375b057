"""PCGrad across timestep clusters (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning",
NeurIPS, Alg. 1; ANT, Go et al. 2023).

For each task i, PCGrad visits the other tasks j in random order and, whenever the running
projection ``g_i^pc`` conflicts with the original ``g_j`` (``<g_i^pc, g_j> < 0``), removes the
conflicting component: ``g_i^pc -= <g_i^pc, g_j> / ||g_j||^2 * g_j``. The update is the sum of the
projected gradients. Rows of the trainer's gradient matrix are gradients of ``l_i / k``, so with
no conflict the update is exactly the vanilla gradient.

Every projected gradient is a linear combination of the original rows, so the sequential
projections run on the k x k Gram matrix ``G G^T`` (computed once, one ``[k, P] x [P, k]``
product) by tracking the k x k coefficient matrix; the direction is then one ``[k] x [k, P]``
product. The conditional projection uses ``clamp`` instead of a Python branch, so nothing is read
back to the host. The random orders come from a CPU generator seeded by ``seed`` (the same on
every rank) whose state is checkpointed, so runs are identical across ranks and across resume.
"""

from __future__ import annotations

import torch

from ant.methods.base import GradientMethod

TINY = 1e-30


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small CPU tensor to ``device`` without making the host wait for queued GPU work.

    A plain copy from pageable memory synchronises the CUDA stream; a pinned, non-blocking copy
    does not (the caching host allocator keeps the pinned source alive until the copy is done).
    """
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def pcgrad_order(num_tasks: int, generator: torch.Generator) -> torch.Tensor:
    """Row i: the other tasks in the random order PCGrad visits them for task i (Alg. 1, line 4).

    Shape ``[k, k - 1]``; each row is an independent uniform permutation of ``{0..k-1} \\ {i}``,
    drawn on the CPU from ``generator`` as the argsort of i.i.d. uniform keys (task i gets a key
    above every other, so it sorts last and is cut off).
    """
    keys = torch.rand(num_tasks, num_tasks, generator=generator, dtype=torch.float64)
    keys.fill_diagonal_(2.0)
    return keys.argsort(dim=1)[:, : num_tasks - 1]


def pcgrad_coefficients(gram: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The k x k matrix ``C`` with projected ``g_i^pc = sum_m C[i, m] g_m`` (Yu et al., Alg. 1).

    ``gram`` is ``G G^T`` of the original gradients, ``order`` as from :func:`pcgrad_order`. Step s
    projects every task i against its s-th task ``j = order[i, s]`` at once: with
    ``<g_i^pc, g_j> = (C M)[i, j]``, the projection ``g_i^pc -= min(<g_i^pc, g_j>, 0) / ||g_j||^2
    g_j`` only changes ``C[i, j]``. A zero gradient ``g_j`` has ``<g_i^pc, g_j> = 0`` and projects
    nothing.
    """
    k = gram.shape[0]
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    coef = eye
    sq_norms = gram.diagonal()
    for s in range(order.shape[1]):
        other = order[:, s]
        dots = (coef * gram.index_select(1, other).T).sum(dim=1)
        step = dots.clamp(max=0.0) / sq_norms.index_select(0, other).clamp_min(TINY)
        coef = coef - step[:, None] * eye.index_select(0, other)
    return coef


def pcgrad_weights(gram: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Weights ``w`` with PCGrad's update ``sum_i g_i^pc = sum_m w_m g_m`` (Yu et al., Alg. 1)."""
    return pcgrad_coefficients(gram, order).sum(dim=0)


def pcgrad_direction(grads: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """PCGrad's update from the ``[k, P]`` gradients ``grads`` and the visiting ``order``.

    The Gram matrix is formed in the gradients' precision and the k x k work is done in float64.
    """
    gram = (grads @ grads.T).double()
    return pcgrad_weights(gram, order).to(grads.dtype) @ grads


class PCGrad(GradientMethod):
    """PCGrad (Yu et al. 2020, Alg. 1): project away conflicts between cluster gradients.

    ``seed`` seeds the CPU generator of the visiting orders. ``task_weights`` reports the weight
    of each cluster loss ``l_i`` in the last update (``w_i / k``; ``1 / k`` each when nothing
    conflicts, and before the first update).
    """

    last_weights: torch.Tensor

    def __init__(self, num_tasks: int, seed: int = 0) -> None:
        super().__init__(num_tasks)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.register_buffer(
            "last_weights", torch.full((num_tasks,), 1.0 / num_tasks), persistent=False
        )

    def next_order(self) -> torch.Tensor:
        """Draw the visiting orders of the next update (advances the generator)."""
        return pcgrad_order(self.num_tasks, self.generator)

    def combine_gram(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        order = to_device(self.next_order(), gram.device)
        weights = pcgrad_weights(gram, order)
        self.last_weights = (weights / self.num_tasks).float()
        return weights

    def task_weights(self) -> torch.Tensor:
        return self.last_weights

    def get_extra_state(self) -> torch.Tensor:
        """The generator state (a uint8 tensor: loads with ``weights_only=True``)."""
        return self.generator.get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state.cpu())
