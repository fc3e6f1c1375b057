"""Running a planned sweep: one ``ant train --resume`` subprocess per run, resumable, with ETA.

A run is a subprocess (``python -m ant train``, or under ``--launcher``, e.g. torchrun), so a
crash of one run leaves the others going; ``jobs`` of them run at once. Finished runs (a
checkpoint at the budget step) are skipped; interrupted ones resume from their newest
checkpoint. Ctrl-C or SIGTERM reaches the running trainers, which save a checkpoint after their
current step; the sweep then stops, and the same command continues it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from ant.core.atomic import atomic_write
from ant.core.checkpoint import list_checkpoints
from ant.core.errors import AntError, Preempted
from ant.core.logbook import METRICS_FILE, read_metrics
from ant.core.progress import progress_bar
from ant.experiments.plan import FINISHED, Plan, PlannedRun, resume_step, run_state

STATE_FILE = "sweep.json"
LOGS_DIR = "logs"
LOCK_FILE = ".lock"
EVAL_PREFIX = "eval/"

Echo = Callable[[str], None]


def duration(seconds: float) -> str:
    """``3h02m``, ``4m10s`` or ``12s``.

    >>> duration(10930), duration(250), duration(12.4)
    ('3h02m', '4m10s', '12s')
    """
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


@dataclass
class RunRecord:
    """What the sweep remembers of a run across invocations (``OUT/sweep.json``)."""

    wall_seconds: float = 0.0
    """Wall time of its training subprocesses (all attempts), evaluations included."""
    attempts: int = 0
    returncode: int | None = None
    repaired_evals: list[int] = field(default_factory=list)


def load_state(out: Path) -> dict[str, RunRecord]:
    """The records of ``OUT/sweep.json`` (empty if there is none)."""
    path = out / STATE_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: RunRecord(**values) for name, values in data.get("runs", {}).items()}
    except (ValueError, TypeError) as exc:
        raise AntError(f"{path} is corrupt ({exc}); delete it (only wall times are lost)") from None


def save_state(out: Path, records: dict[str, RunRecord]) -> None:
    """Write ``OUT/sweep.json`` atomically."""
    data = {"format": "ant-reproduce-state/1", "runs": {k: asdict(v) for k, v in records.items()}}
    with atomic_write(out / STATE_FILE, text=True) as handle:
        handle.write(json.dumps(data, indent=1) + "\n")


@contextmanager
def sweep_lock(out: Path) -> Iterator[None]:
    """Hold ``OUT/.lock``: two sweeps writing the same runs would corrupt them."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / LOCK_FILE).open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise AntError(
                f"another `ant reproduce` is running on {out}; wait for it or use another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train_command(run: PlannedRun, launcher: str | None, device: str) -> list[str]:
    """The command line that trains (or resumes) ``run``.

    Without ``launcher``: ``python -m ant train ...`` with this interpreter; with one, e.g.
    ``torchrun --nproc_per_node 2``: ``torchrun --nproc_per_node 2 -m ant train ...``.
    """
    prefix = shlex.split(launcher) if launcher else [sys.executable]
    return [
        *prefix,
        "-m",
        "ant",
        "train",
        run.recipe_file,
        *run.overrides,
        "--run-dir",
        str(run.directory),
        "--resume",
        "--no-progress",
        "--device",
        device,
    ]


def last_logged_step(run_dir: Path) -> int:
    """The step of the last record in ``RUN/metrics.jsonl`` (0 if none); reads only the tail."""
    path = run_dir / METRICS_FILE
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 8192))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def missing_evals(run: PlannedRun) -> list[int]:
    """Evaluation steps (multiples of ``eval.every`` up to :func:`resume_step`) that have no
    ``eval/`` record in ``metrics.jsonl``: a run killed while it evaluated, after saving the
    checkpoint of that step, resumes past the evaluation."""
    every = run.recipe.eval.every
    done = resume_step(run)
    if not every or done == 0:
        return []
    present = {
        int(r["step"])
        for r in read_metrics(run.directory)
        if "step" in r and any(k.startswith(EVAL_PREFIX) for k in r)
    }
    return [s for s in range(every, done + 1, every) if s not in present]


def repair_evals(run: PlannedRun, device: str) -> list[int]:
    """Evaluate, in this process, the checkpoints of :func:`missing_evals` steps and add their
    records to ``metrics.jsonl`` (kept in step order); returns the steps repaired.

    It calls the trainer's own ``evaluate_during_training`` on the checkpoint's EMA weights with
    the checkpoint's recipe, so the values are those the trainer would have logged.
    """
    have = {step for step, _ in list_checkpoints(run.directory)}
    steps = [s for s in missing_evals(run) if s in have]
    if not steps:
        return []
    from ant.core.checkpoint import checkpoint_path
    from ant.core.runtime import Runtime, pick_device
    from ant.evaluation.training import evaluate_during_training
    from ant.sampling.loading import load_sampling_model

    ctx = Runtime(device=pick_device(device))
    added = []
    for step in steps:
        loaded = load_sampling_model(checkpoint_path(run.directory, step))
        model = loaded.model.to(ctx.device).eval()
        values = evaluate_during_training(model, loaded.diffusion, loaded.recipe, step, ctx)
        added.append({"step": step, **values})
    records = sorted([*read_metrics(run.directory), *added], key=lambda r: int(r.get("step", 0)))
    with atomic_write(run.directory / METRICS_FILE, text=True) as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    return steps


class _Forward:
    """SIGINT/SIGTERM handler: remember the request and pass SIGTERM on to the running children."""

    def __init__(self) -> None:
        self.requested = False
        self.children: list[subprocess.Popen[bytes]] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)


@dataclass
class Outcome:
    """How a sweep invocation ended."""

    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Run name -> the last lines of its log."""
    interrupted: bool = False
    seconds: float = 0.0


@dataclass
class _Active:
    """A training subprocess in flight."""

    run: PlannedRun
    label: str
    child: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path
    slot: int
    begin: int
    seen: int
    started: float


def slot_devices(slot: int, per_job: int, visible: str | None) -> str:
    """``CUDA_VISIBLE_DEVICES`` of job ``slot`` with ``per_job`` GPUs each, taken in order from
    ``visible`` (the inherited ``CUDA_VISIBLE_DEVICES``; unset: devices 0, 1, ...).

    >>> slot_devices(1, 2, None), slot_devices(1, 1, "4,5,6")
    ('2,3', '5')
    """
    pool = [d.strip() for d in visible.split(",")] if visible else None
    wanted = range(slot * per_job, (slot + 1) * per_job)
    if pool is None:
        return ",".join(str(i) for i in wanted)
    if wanted[-1] >= len(pool):
        raise AntError(
            f"job slot {slot} needs GPUs {list(wanted)} but CUDA_VISIBLE_DEVICES has {len(pool)}: "
            "lower --jobs or --gpus-per-job"
        )
    return ",".join(pool[i] for i in wanted)


class Sweep:
    """Trains the runs of a plan, ``jobs`` at a time (see the module docstring).

    With ``gpus_per_job``, job slot i sees GPUs ``i * gpus_per_job ...`` through
    ``CUDA_VISIBLE_DEVICES``; every child gets ``ANT_REPRODUCE_SLOT=i``.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        launcher: str | None = None,
        device: str = "auto",
        jobs: int = 1,
        gpus_per_job: int | None = None,
        echo: Echo | None = None,
        poll_seconds: float = 1.0,
        show: bool = True,
    ) -> None:
        if jobs < 1:
            raise AntError(f"--jobs must be at least 1, got {jobs}")
        if gpus_per_job is not None and gpus_per_job < 1:
            raise AntError(f"--gpus-per-job must be at least 1, got {gpus_per_job}")
        self.plan = plan
        self.out = plan.config.out
        self.launcher = launcher
        self.device = device
        self.jobs = jobs
        self.gpus_per_job = gpus_per_job
        self.echo: Echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.poll_seconds = poll_seconds
        self.show = show
        self.records = load_state(self.out)
        self._trained_steps = 0
        self._start = time.perf_counter()
        self._active: list[_Active] = []

    def _remaining(self) -> int:
        total = 0
        for run in self.plan.runs:
            active = next((a for a in self._active if a.run is run), None)
            done = active.seen if active is not None else resume_step(run)
            total += max(0, run.recipe.train.steps - done)
        return total

    def _eta(self) -> str:
        if self._trained_steps == 0:
            return "ETA unknown"
        rate = self._trained_steps / (time.perf_counter() - self._start)
        return f"ETA {duration(self._remaining() / rate)}"

    def run(self) -> Outcome:
        """Train every unfinished run; returns what happened (failures do not raise)."""
        self._start = time.perf_counter()
        outcome = Outcome()
        forward = _Forward()
        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        total = sum(r.recipe.train.steps for r in self.plan.runs)
        bar = progress_bar(self.show)
        task = bar.add_task("sweep", total=total, completed=total - self._remaining())
        pending = []
        for index, run in enumerate(self.plan.runs, 1):
            label = f"[{index}/{len(self.plan.runs)}] {run.name}"
            if run_state(run) == FINISHED:
                self._repair(run)
                outcome.skipped.append(run.name)
                self.echo(f"{label}: finished earlier, skipped")
            else:
                pending.append((run, label))
        free = list(range(self.jobs))
        warm = self.jobs == 1
        try:
            with bar:
                while pending or self._active:
                    # Until one run has logged a step, its trainer may still be preparing the
                    # evaluation (training the classifier, reference statistics): the others
                    # wait for that cache instead of all computing it at once.
                    while pending and free and not forward.requested and (warm or not self._active):
                        run, label = pending.pop(0)
                        self._start_run(run, label, free.pop(0), forward)
                    if not self._active:
                        break
                    time.sleep(self.poll_seconds)
                    for active in list(self._active):
                        now = max(
                            active.seen,
                            min(
                                last_logged_step(active.run.directory),
                                active.run.recipe.train.steps,
                            ),
                        )
                        bar.advance(task, now - active.seen)
                        self._trained_steps += now - active.seen
                        active.seen = now
                        warm = warm or now > active.begin
                        if active.child.poll() is not None:
                            warm = True
                            self._active.remove(active)
                            forward.children.remove(active.child)
                            free.append(active.slot)
                            free.sort()
                            self._finish(active, forward, outcome, bar, task)
                outcome.interrupted = forward.requested
        finally:
            for active in self._active:
                active.child.wait()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            save_state(self.out, self.records)
        outcome.seconds = time.perf_counter() - self._start
        return outcome

    def _repair(self, run: PlannedRun) -> None:
        repaired = repair_evals(run, self.device)
        if repaired:
            record = self.records.setdefault(run.name, RunRecord())
            record.repaired_evals = sorted({*record.repaired_evals, *repaired})
            self.echo(f"{run.name}: evaluated the checkpoints of steps {repaired} (records lost)")

    def _start_run(self, run: PlannedRun, label: str, slot: int, forward: _Forward) -> None:
        steps = run.recipe.train.steps
        begin = resume_step(run)
        verb = f"resuming at step {begin}" if begin else "starting"
        where = ""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "ANT_REPRODUCE_SLOT": str(slot)}
        if self.gpus_per_job is not None:
            devices = slot_devices(slot, self.gpus_per_job, os.environ.get("CUDA_VISIBLE_DEVICES"))
            env["CUDA_VISIBLE_DEVICES"] = devices
            where = f" on GPUs {devices}"
        self.echo(f"{label}: {verb} ({steps} steps){where}; {self._eta()} for the sweep")
        command = train_command(run, self.launcher, self.device)
        log_path = self.out / LOGS_DIR / f"{run.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        run.directory.mkdir(parents=True, exist_ok=True)
        self.records.setdefault(run.name, RunRecord()).attempts += 1
        log = log_path.open("ab")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n=== {stamp}: {shlex.join(command)}\n".encode())
        log.flush()
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        forward.children.append(child)
        if forward.requested and child.poll() is None:
            # The signal came between the start of the child and the line above.
            child.send_signal(signal.SIGTERM)
        self._active.append(
            _Active(run, label, child, log, log_path, slot, begin, begin, time.perf_counter())
        )

    def _finish(
        self, active: _Active, forward: _Forward, outcome: Outcome, bar: Any, task: Any
    ) -> None:
        active.log.close()
        run, label, code = active.run, active.label, active.child.returncode
        elapsed = time.perf_counter() - active.started
        record = self.records.setdefault(run.name, RunRecord())
        record.wall_seconds += elapsed
        record.returncode = code
        end = resume_step(run)
        if code == 0 and run_state(run) == FINISHED:
            bar.advance(task, max(0, run.recipe.train.steps - active.seen))
            self._trained_steps += max(0, run.recipe.train.steps - active.seen)
            self._repair(run)
            outcome.trained.append(run.name)
            rate = ""
            if end > active.begin:
                rate = f", {elapsed / (end - active.begin):.3g} s per step with evaluations"
            self.echo(
                f"{label}: finished in {duration(elapsed)}{rate}; {self._eta()} for the sweep"
            )
        elif forward.requested or code == Preempted.exit_code:
            # A trainer stopped by its own signal (a scheduler's) means the sweep is preempted
            # too: it starts no further run.
            forward.requested = True
            self.echo(f"{label}: stopped at step {end}; rerun the same command to resume")
        else:
            text = active.log_path.read_text(encoding="utf-8", errors="replace")
            tail = text.strip().splitlines()[-5:]
            outcome.failed[run.name] = "\n".join(tail)
            shown = "\n".join(f"    {line}" for line in tail)
            self.echo(
                f"{label}: FAILED (exit code {code}) at step {end}; log {active.log_path}:\n{shown}"
            )
        save_state(self.out, self.records)
