"""The non-finite guard: no checkpoint or sample grid is ever written from NaN or inf weights.

Every step returns ``finite``, a device flag: whether its loss, its objective and (when
computed) its gradient norm were finite, or under fp16 whether the GradScaler applied the
update. The guard folds it into two device tensors without reading anything back: the first
non-finite step and the current run of consecutive non-finite steps. :meth:`NonFiniteGuard.check`
reads them, once on logging steps and before every checkpoint, sample grid and evaluation,
together with a finiteness check of the weights themselves, all-reduced so every rank decides
alike.

Policies (``train.on_nonfinite``): ``stop`` ends the run at the first check after a non-finite
update, with one line naming the step and the last good checkpoint; ``skip`` drops non-finite
updates (one flag read per step) and stops after ``train.nonfinite_patience`` in a row. Under
fp16 the GradScaler already skips overflowing steps; the guard stops after that many in a row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from ant.core.checkpoint import latest_checkpoint
from ant.core.errors import Diverged

REMEDIES = "lower optim.lr, set optim.grad_clip=1.0, or train with train.precision=bf16"


def all_finite(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """A device flag: whether every element of every tensor is finite (no host read)."""
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    if not flags:
        return torch.ones((), dtype=torch.bool)
    return torch.stack(flags).all()


class NonFiniteGuard:
    """Tracks the steps' ``finite`` flags on the device and stops a run that went non-finite."""

    def __init__(self, policy: str, patience: int, fp16: bool, device: torch.device) -> None:
        self.policy = policy
        self.patience = patience
        self.fp16 = fp16
        self.first_bad = torch.zeros((), dtype=torch.int64, device=device)
        self.streak = torch.zeros((), dtype=torch.int64, device=device)
        self.count = torch.zeros((), dtype=torch.int64, device=device)

    @property
    def skips(self) -> bool:
        """Whether non-finite steps leave the weights untouched (skip policy, or fp16)."""
        return self.policy == "skip" or self.fp16

    def observe(self, step: int, finite: torch.Tensor) -> None:
        """Fold step ``step``'s flag into the device counters (no host read)."""
        bad = ~finite.to(self.streak.device)
        self.first_bad = torch.where(bad & (self.first_bad == 0), step, self.first_bad)
        self.streak = (self.streak + 1) * bad
        self.count = self.count + bad

    def check(
        self,
        step: int,
        weights: Iterable[torch.Tensor],
        run_dir: Path,
        distributed: bool,
    ) -> GuardReport:
        """Read the counters (and check ``weights``) at ``step``: the number of non-finite
        steps so far and, if the run went non-finite, the line that stops it. Every rank must
        call it at the same steps."""
        values = torch.stack(
            [
                self.first_bad,
                self.streak,
                self.count,
                (~all_finite(weights)).to(self.streak.device, torch.int64),
            ]
        )
        if distributed:
            dist.all_reduce(values, op=dist.ReduceOp.MAX)
        first, streak, count, broken = (int(v) for v in values.tolist())
        problem = None
        if broken or (first and not self.skips) or streak >= self.patience:
            latest = latest_checkpoint(run_dir)
            remedies = REMEDIES if self.skips else f"{REMEDIES}, or set train.on_nonfinite=skip"
            good = (
                f"the last good checkpoint is {latest}: {remedies}, and continue from it with "
                "--resume"
                if latest
                else f"no checkpoint was saved: {remedies}, and start again"
            )
            if broken or (first and not self.skips):
                when = f"at step {first}" if first else f"by step {step}"
                problem = (
                    f"training diverged: the loss or the gradients became NaN or infinite {when}, "
                    f"and nothing was saved from then on; {good}"
                )
            else:
                what = "the GradScaler skipped" if self.policy == "stop" else "skipped"
                problem = (
                    f"training diverged: {what} the last {streak} updates in a row as NaN or "
                    f"infinite (train.nonfinite_patience={self.patience}) at step {step}; {good}"
                )
        return GuardReport(skipped=count if self.skips else 0, problem=problem)


@dataclass(frozen=True)
class GuardReport:
    """What a check found: the non-finite updates skipped so far, and the line that stops the
    run (None while it is healthy)."""

    skipped: int
    problem: str | None

    def raise_problem(self) -> None:
        """Raise :class:`Diverged` with :attr:`problem`, if there is one."""
        if self.problem is not None:
            raise Diverged(self.problem)
