"""Stopping on a signal: every rank agrees within one step, whatever ``train.log_every`` is.

SIGTERM, SIGINT and SIGUSR1 (SLURM's ``--signal=USR1@SECONDS``) set a flag. Each step every rank
casts a vote, the flag all-reduced with MAX, and acts on the vote of the previous step, so all
ranks stop after the same step. On a GPU the vote is copied to pinned host memory behind an
event and read one step later, when it is long done: it costs a one-element all-reduce and no
wait for the step in flight. The trainer then saves a checkpoint and exits with 143
(:class:`ant.core.errors.Preempted`).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import torch
import torch.distributed as dist

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopFlag:
    """Set by a stop signal; the loop saves a checkpoint after the agreed step and exits."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.signal = signum


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[None]:
    """Route the stop signals to ``flag`` for the duration of training."""
    previous = {sig: signal.signal(sig, flag) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopVote:
    """The ranks' agreement to stop, one step behind the flags (see the module docstring).

    A single process reads its flag directly.
    """

    def __init__(self, flag: StopFlag, device: torch.device, distributed: bool) -> None:
        self.flag = flag
        self.distributed = distributed
        cuda = device.type == "cuda"
        self._votes = [torch.zeros(1, device=device) for _ in range(2)]
        self._host = [torch.zeros(1, pin_memory=cuda) for _ in range(2)]
        self._events = [torch.cuda.Event() if cuda else None for _ in range(2)]
        self._cast = 0

    def __call__(self) -> bool:
        """Cast this step's vote; whether the ranks agreed to stop (as of the previous step)."""
        if not self.distributed:
            return self.flag.requested
        slot = self._cast % 2
        vote, host, event = self._votes[slot], self._host[slot], self._events[slot]
        vote.fill_(1.0 if self.flag.requested else 0.0)
        dist.all_reduce(vote, op=dist.ReduceOp.MAX)
        host.copy_(vote, non_blocking=True)
        if event is not None:
            event.record()
        self._cast += 1
        if self._cast == 1:
            return False
        previous = 1 - slot
        waiting = self._events[previous]
        if waiting is not None:
            waiting.synchronize()
        return bool(self._host[previous][0] > 0)
