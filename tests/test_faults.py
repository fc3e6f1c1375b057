"""Fault injection: what a hostile world does to a run, and the line and exit status it gets.

kill -9 at random moments (mid-write included) then bitwise resume; SIGTERM to a 2-rank torchrun
with a large ``log_every``; NaN from a huge learning rate, a NaN sample and fp16; a second
trainer on one run directory; full disks (a real file-size limit and a simulated ENOSPC);
leftovers of a crash; and the table of bad inputs. The kill -9 trials run ``ANT_FAULT_TRIALS``
times (2 by default, so CI stays quick; 16 reproduces the original audit).
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from click.testing import CliRunner

from ant.cli import cli
from ant.core import atomic
from ant.core import checkpoint as ckpt
from ant.core.errors import AntError
from ant.core.logbook import METRICS_FILE, JsonlLogger, Logbook, read_metrics
from ant.core.rundir import LOCK_FILE
from ant.core.runtime import Runtime
from ant.data.writer import write_array_shards
from ant.recipe import load_recipe
from ant.training.guard import NonFiniteGuard
from ant.training.loop import build_train_step, fit
from ant.training.signals import StopFlag, StopVote

from .helpers import REPO, assert_one_line_error, run_ant
from .test_training import RECIPE

TRIALS = int(os.environ.get("ANT_FAULT_TRIALS", "2"))
CPU = Runtime()


def recipe_file(tmp_path: Path, shards: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(shards=shards))
    return path


def train_args(recipe: Path, run: Path, *overrides: str) -> list[str]:
    return ["train", str(recipe), *overrides, "--run-dir", str(run), "--no-progress"]


def popen_ant(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ant", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def strict_records(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl read as strict JSON: a bare NaN or Infinity token fails."""

    def refuse(token: str) -> None:
        raise AssertionError(f"non-strict JSON token {token}")

    lines = (run / METRICS_FILE).read_text().splitlines()
    return [json.loads(line, parse_constant=refuse) for line in lines if line.strip()]


def finite_checkpoints(run: Path) -> list[int]:
    """The steps of the run's checkpoints, asserting each holds only finite weights."""
    steps = []
    for step, path in ckpt.list_checkpoints(run):
        state = ckpt.load_checkpoint(path)
        for part in ("model", "ema"):
            for name, value in state[part].items():
                assert torch.isfinite(value).all(), (path, part, name)
        steps.append(step)
    return steps


def rewrite_sample(shards: Path, shard: str, index: int, change: dict[str, bytes]) -> str:
    """Replace entries of sample ``index`` of ``shards/shard`` (a real tar rewrite); its key."""
    path = shards / shard
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
    keys = sorted({m.name.split(".", 1)[0] for m, _ in members})
    key = keys[index]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for member, data in members:
            stem, suffix = member.name.split(".", 1)
            if stem == key and suffix in change:
                data = change[suffix]
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    path.write_bytes(out.getvalue())
    return key


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


@pytest.fixture()
def array_shards(tmp_path: Path) -> Path:
    """40 labelled 1x8x8 arrays in two shards of 20 (cheap to tamper with)."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, 8, 8)).astype(np.float32) * 0.5 for _ in range(40)]
    write_array_shards(arrays, [i % 10 for i in range(40)], tmp_path / "shards", 20)
    return tmp_path / "shards"


# --- non-finite values ---------------------------------------------------------------------


def test_a_huge_learning_rate_stops_with_one_line_and_no_nonfinite_checkpoint(
    tmp_path: Path, digits_shards: Path
) -> None:
    recipe, run = recipe_file(tmp_path, digits_shards), tmp_path / "run"
    result = run_ant(*train_args(recipe, run, "optim.lr=1e30", "train.ckpt_every=1"))
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result.stderr, "training diverged", "at step 2", "--resume")
    assert finite_checkpoints(run) == [1]
    assert "step-0000001.pt" in result.stderr
    records = strict_records(run)
    assert records[0]["loss"] is not None and records[1]["loss"] is None
    assert not (run / "samples" / "final.png").exists()


def test_fp16_that_skips_every_step_stops(tmp_path: Path, digits_shards: Path) -> None:
    recipe, run = recipe_file(tmp_path, digits_shards), tmp_path / "run"
    overrides = ["optim.lr=1e30", "train.precision=fp16", "train.nonfinite_patience=3"]
    result = run_ant(*train_args(recipe, run, *overrides, "train.steps=30"))
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result.stderr, "the GradScaler skipped the last", "in a row")
    finite_checkpoints(run)
    strict_records(run)


def _step(tmp_path: Path, shards: Path, *overrides: str) -> Any:
    recipe = load_recipe(str(recipe_file(tmp_path, shards)), overrides)
    step, _ = build_train_step(recipe, CPU)
    return step


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_skip_policy_leaves_the_weights_untouched(tmp_path: Path, digits_shards: Path) -> None:
    step = _step(tmp_path, digits_shards, "train.on_nonfinite=skip")
    x = torch.zeros(20, 1, 8, 8)
    y = torch.arange(20) % 10
    before, ema = _flat(step.model), _flat(step.ema)
    out = step(x.clone().fill_(float("nan")), y, False)
    assert not bool(out.finite)
    assert torch.equal(_flat(step.model), before) and torch.equal(_flat(step.ema), ema)
    assert not step.optimizer.state, "a skipped step leaves Adam's state alone"
    out = step(x, y, False)
    assert bool(out.finite) and not torch.equal(_flat(step.model), before)


def test_stop_policy_flags_the_step_and_the_guard_stops(
    tmp_path: Path, digits_shards: Path
) -> None:
    step = _step(tmp_path, digits_shards)
    guard = NonFiniteGuard("stop", 20, fp16=False, device=torch.device("cpu"))
    y = torch.arange(20) % 10
    out = step(torch.zeros(20, 1, 8, 8), y, False)
    guard.observe(1, out.finite)
    assert guard.check(1, step.model.parameters(), tmp_path, False).problem is None
    out = step(torch.full((20, 1, 8, 8), float("nan")), y, False)
    guard.observe(2, out.finite)
    report = guard.check(2, [], tmp_path, False)
    assert report.problem is not None and "at step 2" in report.problem


def test_the_guard_counts_streaks_and_checks_weights(tmp_path: Path) -> None:
    guard = NonFiniteGuard("skip", 3, fp16=False, device=torch.device("cpu"))
    flags = [True, False, False, True, False, False]
    for index, flag in enumerate(flags, 1):
        guard.observe(index, torch.tensor(flag))
    report = guard.check(6, [torch.ones(3)], tmp_path, False)
    assert (report.skipped, report.problem) == (4, None)
    guard.observe(7, torch.tensor(False))
    assert "last 3 updates in a row" in str(guard.check(7, [], tmp_path, False).problem)
    fresh = NonFiniteGuard("skip", 3, fp16=False, device=torch.device("cpu"))
    broken = fresh.check(1, [torch.tensor([1.0, float("inf")])], tmp_path, False)
    assert broken.problem is not None and "by step 1" in broken.problem


def test_a_nan_sample_is_named_with_its_shard(tmp_path: Path, array_shards: Path) -> None:
    bad = np.zeros((1, 8, 8))
    bad[0, 3, 3] = np.nan
    key = rewrite_sample(array_shards, "shard-000001.tar", 4, {"x.npy": npy(bad)})
    recipe = recipe_file(tmp_path, array_shards)
    result = run_ant(*train_args(recipe, tmp_path / "run", "train.steps=40"))
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, key, "shard-000001.tar", "NaN or infinite")


def test_metrics_stay_strict_json(tmp_path: Path) -> None:
    book = Logbook([JsonlLogger(tmp_path)])
    book.log({"step": 1, "loss": float("nan"), "cluster_loss": [1.0, float("inf")]})
    assert strict_records(tmp_path) == [{"step": 1, "loss": None, "cluster_loss": [1.0, None]}]


# --- signals and kill -9 -------------------------------------------------------------------


def _vote_worker(rank: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    flag = StopFlag()
    vote = StopVote(flag, torch.device("cpu"), distributed=True)
    decisions = []
    for call in range(6):
        if rank == 1 and call == 2:
            flag.requested = True
        decisions.append(vote())
    Path(f"{out}-{rank}.json").write_text(json.dumps(decisions))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_rank_agrees_to_stop_one_step_after_a_signal(tmp_path: Path) -> None:
    mp.spawn(_vote_worker, args=(_free_port(), str(tmp_path / "votes")), nprocs=2, join=True)
    decisions = [json.loads((tmp_path / f"votes-{r}.json").read_text()) for r in (0, 1)]
    assert decisions[0] == decisions[1] == [False, False, False, True, True, True]


def test_sigterm_to_a_two_rank_torchrun_saves_within_a_step(
    tmp_path: Path, digits_shards: Path
) -> None:
    recipe, run = recipe_file(tmp_path, digits_shards), tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port())]
    command += ["-m", "ant", *train_args(recipe, run, "train.steps=100000")]
    # torchrun signals each rank's whole process group: the loader workers too.
    command += ["train.log_every=25000", "train.ckpt_every=100000", "data.num_workers=1"]
    command += ["--device", "cpu"]
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "clusters.json").exists():
        time.sleep(0.2)
    time.sleep(3)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - signalled < 25, "torchrun's 30 s grace would SIGKILL the ranks"
    stopped = [line for line in stderr.splitlines() if line.startswith("Stopped: SIGTERM")]
    assert len(stopped) == 1, stderr
    step = ckpt.load_checkpoint(run)["step"]
    assert step >= 1 and f"after step {step}," in stopped[0]


def _train_until_done(args: list[str], rng: random.Random, final: Path, duration: float) -> int:
    """Run the trainer with --resume, kill -9 it at a random moment, until it finishes.

    The moments are drawn within the first ``duration`` seconds of each attempt (an unbroken
    run's wall time, start-up included), so the first attempt is always killed.
    """
    kills = 0
    while not final.exists():
        proc = popen_ant(*args, "--resume")
        if kills < 3:
            try:
                proc.wait(timeout=rng.uniform(0.3, 0.8) * duration)
            except subprocess.TimeoutExpired:
                proc.kill()
                kills += 1
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode in (0, -signal.SIGKILL), stderr
    return kills


def test_kill_9_at_random_moments_then_resume_is_bitwise(
    tmp_path: Path, digits_shards: Path
) -> None:
    recipe = recipe_file(tmp_path, digits_shards)
    steps = ["train.steps=40", "train.ckpt_every=1", "train.log_every=1"]
    reference = tmp_path / "reference"
    start = time.monotonic()
    done = popen_ant(*train_args(recipe, reference, *steps))
    _, stderr = done.communicate(timeout=300)
    duration = time.monotonic() - start
    assert done.returncode == 0, stderr
    expected = ckpt.load_checkpoint(reference)
    kills = 0
    for trial in range(TRIALS):
        run = tmp_path / f"killed-{trial}"
        final = ckpt.checkpoint_path(run, 40)
        args = train_args(recipe, run, *steps)
        kills += _train_until_done(args, random.Random(trial), final, duration)
        got = ckpt.load_checkpoint(final)
        for part in ("model", "ema"):
            for key, value in expected[part].items():
                assert torch.equal(got[part][key], value), (trial, part, key)
        assert [r["step"] for r in read_metrics(run)] == list(range(1, 41))
        assert not list(run.rglob(".*.tmp")), "leftover temporary files"
    assert kills >= TRIALS, "every trial was killed at least once"


# --- one trainer per run directory ---------------------------------------------------------


def test_a_second_trainer_is_refused_and_a_dead_ones_lock_taken_over(
    tmp_path: Path, digits_shards: Path
) -> None:
    recipe, run = recipe_file(tmp_path, digits_shards), tmp_path / "run"
    first = popen_ant(*train_args(recipe, run, "train.steps=100000", "train.ckpt_every=3"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ckpt.list_checkpoints(run):
        time.sleep(0.2)
    second = run_ant(*train_args(recipe, run, "--resume"))
    assert second.returncode == 2, second.stderr
    assert_one_line_error(second.stderr, "in use by another trainer", f"PID {first.pid}")
    first.kill()
    first.wait()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == first.pid
    third = run_ant(*train_args(recipe, run, "train.steps=4", "--resume"))
    assert third.returncode == 0, third.stderr
    assert f"took over the lock of PID {first.pid}" in third.stderr
    assert (run / LOCK_FILE).read_text() == "", "a finished trainer leaves no holder behind"


# --- disks and leftovers ---------------------------------------------------------------------


def test_a_file_size_limit_is_one_line_and_leaves_no_temporary(
    tmp_path: Path, digits_shards: Path
) -> None:
    recipe, run = recipe_file(tmp_path, digits_shards), tmp_path / "run"

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    result = subprocess.run(
        [sys.executable, "-m", "ant", *train_args(recipe, run, "train.steps=2")],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, "cannot write", "step-0000002.pt", "needs", "free there")
    assert not list(run.rglob(".*.tmp"))


class _FullDisk:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, handle: Any, room: int) -> None:
        self._handle, self.room = handle, room

    def write(self, data: Any) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return int(self._handle.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def test_enospc_while_writing_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {"format": 1, "model": {"w": torch.ones(1000)}, "recipe": {}, "step": 1}
    good = ckpt.save_checkpoint(state, ckpt.checkpoint_path(tmp_path, 1))
    real = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k), 100))
    with pytest.raises(AntError) as caught:
        ckpt.save_checkpoint(state, ckpt.checkpoint_path(tmp_path, 2))
    message = str(caught.value)
    assert "no space left on the device" in message and "needs 4.0 kB" in message
    assert "free there" in message
    notes = tmp_path / "notes.txt"
    with pytest.raises(AntError, match="no space left"), atomic.atomic_write(notes, text=True) as f:
        f.write("x" * 500)
    monkeypatch.undo()
    assert ckpt.latest_checkpoint(tmp_path) == good
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-0000001.pt"]
    assert not (tmp_path / "notes.txt").exists()


def test_a_read_only_run_directory_is_one_line(
    tmp_path: Path, digits_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = load_recipe(str(recipe_file(tmp_path, digits_shards)), ["train.steps=1"])
    real = Path.open

    def read_only(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if self.name == LOCK_FILE:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", read_only)
    with pytest.raises(AntError, match=r"trainer.lock: the file system is read-only .* make it"):
        fit(recipe, tmp_path / "run", CPU, resume=True, show=False)


def test_resume_drops_a_torn_metrics_line_and_stale_temporaries(
    tmp_path: Path, digits_shards: Path
) -> None:
    recipe = load_recipe(str(recipe_file(tmp_path, digits_shards)), ["train.steps=4"])
    run = tmp_path / "run"
    fit(recipe, run, CPU, show=False)
    with (run / METRICS_FILE).open("a") as handle:
        handle.write('{"step": 5, "lo')
    stale = run / "checkpoints" / ".step-0000006.pt.x1y2.tmp"
    stale.write_bytes(b"PK half a checkpoint")
    longer = load_recipe(str(recipe_file(tmp_path, digits_shards)), ["train.steps=6"])
    fit(longer, run, CPU, resume=True, show=False)
    assert not stale.exists()
    assert [r["step"] for r in strict_records(run)] == [1, 2, 3, 4, 5, 6]


# --- the bad-input table ---------------------------------------------------------------------


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stderr


def test_bad_recipes_get_one_line(tmp_path: Path, digits_shards: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    recipe = str(recipe_file(tmp_path, digits_shards))
    cases = [
        (["recipe", "validate", str(binary)], "not a text file"),
        (["recipe", "validate", str(empty)], "is empty"),
        (["recipe", "validate", recipe, "train.global_batch_size=18"], "divisible by"),
        (["recipe", "validate", recipe, "clustering.k=2000"], "more than diffusion.timesteps"),
        (["recipe", "validate", recipe, "model.in_channels=3"], "set model.in_channels=1"),
        (["recipe", "validate", recipe, "model.input_size=16"], "set model.input_size=8"),
        (["recipe", "validate", recipe, "model.num_classes=5"], "set model.num_classes=10"),
        (["train", recipe, "model.in_channels=3", "--run-dir", str(tmp_path / "r")], "1-channel"),
    ]
    for args, fragment in cases:
        code, stderr = _invoke(*args)
        assert code == 2, (args, stderr)
        assert_one_line_error(stderr, fragment)
    code, _ = _invoke("recipe", "validate", recipe)
    assert code == 0


def test_unlabelled_data_for_a_conditional_model_is_refused(tmp_path: Path) -> None:
    arrays = [np.zeros((1, 8, 8), np.float32) for _ in range(20)]
    write_array_shards(arrays, None, tmp_path / "plain", 20)
    recipe = str(recipe_file(tmp_path, tmp_path / "plain"))
    code, stderr = _invoke("recipe", "validate", recipe)
    assert code == 2
    assert_one_line_error(stderr, "unlabelled", "model.num_classes=0")


def test_a_label_beyond_num_classes_is_named_at_decode_time(
    tmp_path: Path, array_shards: Path
) -> None:
    key = rewrite_sample(array_shards, "shard-000000.tar", 7, {"cls": b"12"})
    recipe = recipe_file(tmp_path, array_shards)
    result = run_ant(*train_args(recipe, tmp_path / "run", "train.steps=40"))
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, key, "shard-000000.tar", "label 12 is outside 0..9")
    verify = run_ant("data", "info", str(array_shards), "--verify")
    assert verify.returncode == 2
    assert_one_line_error(verify.stderr, "verification failed", "shard-000000.tar")


def test_verify_checks_every_sample_against_meta_json(array_shards: Path) -> None:
    rewrite_sample(array_shards, "shard-000001.tar", 2, {"x.npy": npy(np.zeros((1, 8, 9)))})
    result = run_ant("data", "info", str(array_shards), "--verify")
    assert result.returncode == 2
    assert "differs from meta.json" in result.stdout
    assert_one_line_error(result.stderr, "verification failed", "shard-000001.tar")


def test_an_output_under_a_file_is_one_line(tmp_path: Path, digits_shards: Path) -> None:
    recipe = load_recipe(str(recipe_file(tmp_path, digits_shards)), ["train.steps=1"])
    fit(recipe, tmp_path / "run", CPU, show=False)
    (tmp_path / "file").write_text("")
    code, stderr = _invoke("sample", str(tmp_path / "run"), "--out", f"{tmp_path}/file/x.png")
    assert code == 2
    assert_one_line_error(stderr, "cannot write", "x.png", "choose another path")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_checkpoint_is_refused_without_unsafe_advice(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = ckpt.checkpoint_path(tmp_path / "run", 1)
    path.parent.mkdir(parents=True)
    torch.save({"model": _Payload(marker), "recipe": {}}, path)
    for args in (["sample", str(path), "--out", str(tmp_path / "x.png")], ["eval", str(path)]):
        code, stderr = _invoke(*args)
        assert code == 2, stderr
        assert_one_line_error(stderr, "refused to load", "tampered with")
        assert "weights_only=False" not in stderr and "weights_only` set to `False" not in stderr
    assert not marker.exists()


def test_reproduce_treats_a_preempted_trainer_as_interrupted(
    tmp_path: Path, digits_shards: Path
) -> None:
    recipe = recipe_file(tmp_path, digits_shards)
    preempted = "sh -c 'exit 143' sh"
    args = ["reproduce", "--recipe", str(recipe), "--variants", "vanilla,uw-timestep"]
    args += ["--seeds", "0", "--steps", "4", "--out", str(tmp_path / "out"), "--no-progress"]
    result = CliRunner().invoke(cli, [*args, "--launcher", preempted])
    assert result.exit_code == 143, result.output
    assert result.output.count(": starting") == 1
    assert "stopped at step 0; rerun the same command to resume" in result.output
