"""The trainer end to end on the real digits shards: loss, resume, checkpoints, signals, DDP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ant.core import checkpoint as ckpt
from ant.core.errors import AntError
from ant.core.logbook import read_metrics
from ant.core.runtime import Runtime
from ant.data.writer import write_array_shards
from ant.recipe import Recipe, load_recipe
from ant.training.loop import fit, train

from .helpers import REPO, assert_one_line_error, run_ant

CPU_CTX = Runtime()

RECIPE = """
model: {{name: DiT-Micro/2, input_size: 8, in_channels: 1, num_classes: 10}}
diffusion: {{timesteps: 1000, schedule: cosine, learn_sigma: true}}
data: {{shards: {shards}, num_workers: 0, shuffle_buffer: 100}}
clustering: {{objective: uniform, k: 5}}
method: {{name: uw}}
optim: {{lr: 1e-3}}
train: {{steps: 10, global_batch_size: 20, log_every: 1, ckpt_every: 5, ema_decay: 0.9}}
sample: {{num: 10, steps: 4, sampler: ddim}}
"""


def make_recipe(tmp_path: Path, shards: Path, *overrides: str) -> Recipe:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(shards=shards))
    return load_recipe(str(path), overrides)


def test_a_few_steps_on_digits_lower_the_loss(tmp_path: Path, digits_shards: Path) -> None:
    recipe = make_recipe(
        tmp_path, digits_shards, "train.steps=80", "train.ckpt_every=1000", "method.name=vanilla"
    )
    fit(recipe, tmp_path / "run", CPU_CTX, show=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run")]
    assert len(losses) == 80
    assert sum(losses[-15:]) / 15 < 0.7 * sum(losses[:5]) / 5


def test_run_directory_has_recipe_metrics_checkpoints_samples(
    tmp_path: Path, digits_shards: Path
) -> None:
    recipe = make_recipe(tmp_path, digits_shards)
    run = tmp_path / "run"
    fit(recipe, run, CPU_CTX, show=False)
    assert (run / "recipe.yaml").is_file()
    assert load_recipe(str(run / "recipe.yaml")) == recipe.model_copy(update={"name": "recipe"})
    records = read_metrics(run)
    assert [r["step"] for r in records] == list(range(1, 11))
    first = records[0]
    assert len(first["cluster_loss"]) == 5 and len(first["cluster_weight"]) == 5
    assert {"loss", "objective", "lr", "grad_norm", "samples_per_s"} <= set(first)
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [5, 10]
    assert (run / "samples" / "final.png").is_file()
    assert list((run / "tensorboard").iterdir())
    state = ckpt.load_checkpoint(run)
    assert state["step"] == 10
    log_var = state["method"]["log_var"]
    assert log_var.shape == (5,) and bool((log_var != 0).all())
    uw_group = state["optimizer"]["param_groups"][1]
    assert uw_group["lr"] == pytest.approx(0.025) and uw_group["weight_decay"] == 0.0
    assert records[-1]["cluster_weight"] == pytest.approx((0.5 * torch.exp(-log_var)).tolist())


def test_resume_equals_an_uninterrupted_run(tmp_path: Path, digits_shards: Path) -> None:
    recipe = make_recipe(tmp_path, digits_shards, "train.ckpt_every=3")
    fit(recipe, tmp_path / "straight", CPU_CTX, show=False)
    interrupted = recipe.model_copy(update={"train": recipe.train.model_copy(update={"steps": 7})})
    fit(interrupted, tmp_path / "resumed", CPU_CTX, show=False)
    with pytest.raises(AntError, match="already holds checkpoints"):
        fit(recipe, tmp_path / "resumed", CPU_CTX, show=False)
    fit(recipe, tmp_path / "resumed", CPU_CTX, resume=True, show=False)

    def strip(records: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in records]

    assert strip(read_metrics(tmp_path / "resumed")) == strip(read_metrics(tmp_path / "straight"))
    a = ckpt.load_checkpoint(tmp_path / "straight")
    b = ckpt.load_checkpoint(tmp_path / "resumed")
    for part in ("model", "ema", "method"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)


def test_resume_checks_the_clusters_and_records_changed_settings(
    tmp_path: Path, digits_shards: Path
) -> None:
    run = tmp_path / "run"
    fit(make_recipe(tmp_path, digits_shards, "train.steps=2"), run, CPU_CTX, show=False)
    original = (run / "recipe.yaml").read_text()
    listing = sorted(p.name for p in run.rglob("*"))
    other = make_recipe(tmp_path, digits_shards, "train.steps=4", "clustering.objective=snr")
    with pytest.raises(AntError, match=r"trained on the timestep clusters \[\(0, 199\), .* gives"):
        fit(other, run, CPU_CTX, resume=True, show=False)
    assert sorted(p.name for p in run.rglob("*")) == listing, "a refused resume writes nothing"
    faster = make_recipe(tmp_path, digits_shards, "train.steps=4", "optim.lr=5e-4")
    fit(faster, run, CPU_CTX, resume=True, show=False)
    assert (run / "recipe.yaml").read_text() == original, "recipe.yaml is the run's first recipe"
    recorded = load_recipe(str(run / "recipe-step-0000002.yaml"))
    assert (recorded.optim.lr, recorded.train.steps) == (5e-4, 4)


def test_a_newer_checkpoint_format_is_refused(tmp_path: Path) -> None:
    path = ckpt.checkpoint_path(tmp_path, 1)
    ckpt.save_checkpoint({"format": ckpt.CHECKPOINT_FORMAT + 1, "model": {}, "recipe": {}}, path)
    with pytest.raises(AntError, match=r"checkpoint format 2, this ant reads format 1 .* upgrade"):
        ckpt.load_checkpoint(path)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = ckpt.save_checkpoint(
        {"format": 1, "model": {"w": torch.ones(3)}, "recipe": {}, "step": 1},
        ckpt.checkpoint_path(tmp_path, 1),
    )

    def crash(obj: object, handle: object) -> None:
        handle.write(b"PK\x03\x04 half a checkpoint")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"model": {}}, ckpt.checkpoint_path(tmp_path, 2))
    monkeypatch.undo()
    assert ckpt.latest_checkpoint(tmp_path) == good
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    assert torch.equal(ckpt.load_checkpoint(tmp_path)["model"]["w"], torch.ones(3))


def test_corrupt_checkpoint_is_one_line(tmp_path: Path) -> None:
    path = ckpt.checkpoint_path(tmp_path, 3)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(AntError, match=r"corrupt or was tampered with"):
        ckpt.load_checkpoint(path)


def test_cli_errors_exit_2(tmp_path: Path, digits_shards: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(shards=digits_shards))
    result = run_ant(
        "train", str(path), "train.global_batch_size=18", "--run-dir", str(tmp_path / "r")
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "divisible by clustering.k (5)")
    result = run_ant("train", str(path), "data.shards=null", "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "data.shards is not set")


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path: Path, digits_shards: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(shards=digits_shards))
    run = tmp_path / "run"
    args = [sys.executable, "-m", "ant", "train", str(path), "train.steps=100000"]
    args += ["train.ckpt_every=100000", "--run-dir", str(run), "--no-progress"]
    proc = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_metrics(run)) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert_one_line_error(stderr, "Stopped: SIGTERM after step", "--resume")
    step = ckpt.load_checkpoint(run)["step"]
    assert step >= 3 and step == read_metrics(run)[-1]["step"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ddp_worker(rank: int, port: int, recipe_dump: dict[str, object], run: str, out: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ctx = Runtime(rank=rank, world_size=2, local_rank=rank)
    step = fit(Recipe.model_validate(recipe_dump), Path(run), ctx, show=False)
    flat = torch.cat([p.detach().reshape(-1) for p in step.ema.parameters()])
    flat = torch.cat([flat, *[p.detach().reshape(-1) for p in step.method.parameters()]])
    gathered = [torch.zeros_like(flat) for _ in range(2)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        torch.save(torch.stack(gathered), out)
    dist.barrier()  # neither rank tears gloo down while the other still reduces
    dist.destroy_process_group()


def test_two_gloo_ranks_end_with_identical_weights(tmp_path: Path, digits_shards: Path) -> None:
    recipe = make_recipe(tmp_path, digits_shards, "train.steps=6", "sample.num=5")
    out = tmp_path / "weights.pt"
    mp.spawn(
        _ddp_worker,
        args=(_free_port(), recipe.model_dump(mode="json"), str(tmp_path / "run"), str(out)),
        nprocs=2,
    )
    both = torch.load(out, weights_only=True)
    assert torch.equal(both[0], both[1])
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == list(range(1, 7))


def test_torchrun_two_cpu_ranks(tmp_path: Path, digits_shards: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(shards=digits_shards))
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [
            *[str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port())],
            *["-m", "ant", "train", str(path), "train.steps=4"],
            *["--run-dir", str(tmp_path / "run"), "--no-progress"],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert ckpt.load_checkpoint(tmp_path / "run")["step"] == 4


def test_bad_torchrun_variables_are_one_line(tmp_path: Path, digits_shards: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(shards=digits_shards))
    for env, fragment in (
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK 2 is not in 0..WORLD_SIZE-1 (2)"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ):
        result = run_ant("train", str(path), "--run-dir", str(tmp_path / "r"), env=env)
        assert result.returncode == 2, result.stderr
        assert_one_line_error(result.stderr, fragment)


def test_train_function_returns_the_run_dir(tmp_path: Path, digits_shards: Path) -> None:
    recipe = make_recipe(tmp_path, digits_shards, "train.steps=2", "sample.num=2")
    assert train(recipe, tmp_path / "r2", device="cpu", show=False) == tmp_path / "r2"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_run(tmp_path: Path, digits_shards: Path, precision: str) -> None:
    recipe = make_recipe(
        tmp_path, digits_shards, "train.steps=3", f"train.precision={precision}", "sample.num=2"
    )
    step = fit(recipe, tmp_path / "run", CPU_CTX, show=False)
    assert (step.scaler is not None) == (precision == "fp16")
    records = read_metrics(tmp_path / "run")
    assert len(records) == 3 and all(r["loss"] == r["loss"] for r in records)


def test_imagenet_recipe_trains_on_latent_shards_with_a_tiny_model(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    latents = [torch.randn(4, 8, 8, generator=generator).numpy() for _ in range(40)]
    write_array_shards(latents, [i % 7 for i in range(40)], tmp_path / "latents", 20)
    recipe = load_recipe(
        "dit_l2_imagenet",
        [
            "model.name=DiT-Micro/2",
            "model.input_size=8",
            "vae.name_or_path=null",  # the recipe's VAE is not in this machine's cache
            f"data.shards={tmp_path / 'latents'}",
            "data.num_workers=0",
            "train.steps=2",
            "train.global_batch_size=10",
            "train.precision=fp32",
            "sample.num=3",
            "sample.steps=3",
        ],
    )
    fit(recipe, tmp_path / "run", CPU_CTX, show=False)
    assert ckpt.load_checkpoint(tmp_path / "run")["step"] == 2
    assert (tmp_path / "run" / "samples" / "final.npy").is_file()
