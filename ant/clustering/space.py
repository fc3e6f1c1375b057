"""The space of denoising tasks that objectives cluster: timesteps, their log-SNR, their affinity.

ANT treats the T timesteps as T denoising tasks (Go et al. 2023, Sec. 3) and clusters them by
timestep, by the noise schedule's signal-to-noise ratio, or by task affinity (Sec. 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ant.core.errors import AntError

AFFINITY_FIX = (
    "`ant analyze affinity CKPT --data SHARDS --out DIR` writes a valid one to DIR/affinity.npy"
)


@dataclass(frozen=True, eq=False)
class TaskSpace:
    """The T denoising tasks: ``log_snr[t]`` of the noise schedule and an optional affinity.

    ``affinity`` is a ``T x T`` task-affinity matrix (Go et al. 2023, Sec. 4.1): ``A[i, j]`` is
    the cosine similarity of the training gradients of tasks i and j.
    """

    num_timesteps: int
    log_snr: np.ndarray
    affinity: np.ndarray | None = None
    schedule: str | None = None

    def __post_init__(self) -> None:
        if self.log_snr.shape != (self.num_timesteps,):
            raise ValueError(
                f"log_snr must have shape ({self.num_timesteps},), got {self.log_snr.shape}"
            )
        if self.affinity is not None and self.affinity.shape != (
            self.num_timesteps,
            self.num_timesteps,
        ):
            raise ValueError(
                f"affinity must be {self.num_timesteps}x{self.num_timesteps}, "
                f"got shape {self.affinity.shape}"
            )

    @classmethod
    def from_schedule(
        cls, schedule: str, num_timesteps: int, affinity: np.ndarray | None = None
    ) -> TaskSpace:
        """The tasks of a named noise schedule (``linear`` or ``cosine``) with T timesteps.

        Raises :class:`AntError` if the schedule's log-SNR is not finite, as for the linear
        schedule with T <= 20, whose betas (scaled by 1000 / T) reach 1.
        """
        from ant.diffusion.schedules import alphas_cumprod, get_betas, log_snr

        values = log_snr(alphas_cumprod(get_betas(schedule, num_timesteps))).numpy()
        if not np.isfinite(values).all():
            raise AntError(
                f"the {schedule} noise schedule with {num_timesteps} timesteps has betas of 1 or "
                "more (its log-SNR is not finite): use more timesteps or the cosine schedule"
            )
        return cls(num_timesteps, values, affinity, schedule)


def expand_affinity(affinity: np.ndarray, num_timesteps: int) -> np.ndarray:
    """A ``T x T`` affinity from a ``T x T`` or group-level ``G x G`` one.

    A group-level matrix (G groups of T/G consecutive timesteps, e.g. 100 groups of 10, which the
    authors found makes no significant difference) is expanded by repeating each entry over the
    T/G x T/G block of timesteps it stands for. Raises ``ValueError`` for a non-square matrix, a G
    that does not divide T, or non-finite entries.
    """
    if affinity.ndim != 2 or affinity.shape[0] != affinity.shape[1]:
        raise ValueError(f"the affinity must be a square matrix, got shape {affinity.shape}")
    groups = affinity.shape[0]
    if groups == 0 or num_timesteps % groups != 0:
        raise ValueError(
            f"a {groups}x{groups} affinity does not fit {num_timesteps} timesteps "
            f"(need {num_timesteps}x{num_timesteps} or G x G with G dividing {num_timesteps})"
        )
    if not np.isfinite(affinity).all():
        raise ValueError("the affinity has NaN or infinite entries")
    repeat = num_timesteps // groups
    expanded = np.repeat(np.repeat(affinity.astype(np.float64), repeat, axis=0), repeat, axis=1)
    return np.ascontiguousarray(expanded)


def load_affinity(path: str | Path, num_timesteps: int) -> np.ndarray:
    """Read a task-affinity ``.npy`` file and expand it to ``T x T``.

    A missing or unreadable file, a wrong shape or NaN entries raise a one-line
    :class:`~ant.core.errors.AntError` that names the file and how to make a valid one.
    """
    file = Path(path)
    if not file.is_file():
        raise AntError(f"affinity file {file} does not exist; {AFFINITY_FIX}")
    try:
        raw = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AntError(
            f"affinity file {file} is not a readable .npy array ({reason}); {AFFINITY_FIX}"
        ) from None
    if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise AntError(
            f"affinity file {file} holds {raw.dtype} values, not real numbers; {AFFINITY_FIX}"
        )
    try:
        return expand_affinity(raw, num_timesteps)
    except ValueError as exc:
        raise AntError(f"affinity file {file}: {exc}; {AFFINITY_FIX}") from None
