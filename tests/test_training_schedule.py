"""Learning-rate schedules: the closed forms, the logged rate, bitwise resume, refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ant.core import checkpoint as ckpt
from ant.core.errors import AntError
from ant.core.logbook import read_metrics
from ant.recipe import load_recipe
from ant.training.loop import fit
from ant.training.lr_schedule import lr_factor, make_scheduler

from .helpers import assert_one_line_error, run_ant
from .test_training import CPU_CTX, make_recipe


def test_warmup_then_each_decay_in_closed_form() -> None:
    warm = [lr_factor(s, "cosine", warmup=4, horizon=12) for s in range(4)]
    assert warm == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, "cosine", warmup=4, horizon=12) == 1.0
    assert lr_factor(8, "cosine", warmup=4, horizon=12) == pytest.approx(0.5)
    assert lr_factor(12, "cosine", warmup=4, horizon=12, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(50, "cosine", warmup=4, horizon=12, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(6, "linear", warmup=2, horizon=10, min_ratio=0.2) == pytest.approx(0.6)
    assert lr_factor(9, "constant", warmup=2, horizon=10) == 1.0
    assert lr_factor(15, "inverse_sqrt", warmup=4, horizon=10) == pytest.approx(0.5)
    assert lr_factor(99, "inverse_sqrt", warmup=0, horizon=10) == pytest.approx(0.1)
    assert lr_factor(10**6, "inverse_sqrt", warmup=4, horizon=10, min_ratio=0.3) == 0.3


def test_the_scheduler_leaves_the_method_groups_constant() -> None:
    weights, own = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([{"params": [weights]}, {"params": [own], "lr": 0.025}], lr=1.0)
    scheduler = make_scheduler(
        optimizer, "linear", warmup=0, horizon=4, min_lr=0.0, scheduled_groups=1
    )
    rates = []
    for _ in range(4):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert rates == [[1.0, 0.025], [0.75, 0.025], [0.5, 0.025], [0.25, 0.025]]


def test_logged_lr_follows_the_schedule_and_resume_is_bitwise(
    tmp_path: Path, digits_shards: Path
) -> None:
    settings = ("optim.schedule=cosine", "optim.warmup_steps=3", "optim.min_lr=1e-4")
    recipe = make_recipe(tmp_path, digits_shards, "train.ckpt_every=3", *settings)
    fit(recipe, tmp_path / "straight", CPU_CTX, show=False)
    lrs = [r["lr"] for r in read_metrics(tmp_path / "straight")]
    expected = [
        1e-3 * lr_factor(s, "cosine", warmup=3, horizon=10, min_ratio=0.1) for s in range(10)
    ]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(1e-3 / 3) and max(lrs) == pytest.approx(1e-3)
    state = ckpt.load_checkpoint(tmp_path / "straight")
    assert state["scheduler"]["last_epoch"] == 10
    assert state["optimizer"]["param_groups"][1]["lr"] == pytest.approx(0.025), "UW's rate"

    # Interrupted at step 6 (the horizon stays 10 through decay_steps), then resumed.
    short = make_recipe(
        tmp_path,
        digits_shards,
        "train.ckpt_every=3",
        "train.steps=6",
        "optim.decay_steps=10",
        *settings,
    )
    fit(short, tmp_path / "resumed", CPU_CTX, show=False)
    again = make_recipe(
        tmp_path, digits_shards, "train.ckpt_every=3", "optim.decay_steps=10", *settings
    )
    fit(again, tmp_path / "resumed", CPU_CTX, resume=True, show=False)
    resumed = read_metrics(tmp_path / "resumed")
    assert [r["lr"] for r in resumed] == lrs
    b = ckpt.load_checkpoint(tmp_path / "resumed")
    for part in ("model", "ema", "method"):
        for key in state[part]:
            assert torch.equal(state[part][key], b[part][key]), (part, key)


def test_resume_refuses_a_changed_decay_horizon(tmp_path: Path, digits_shards: Path) -> None:
    run = tmp_path / "run"
    first = make_recipe(tmp_path, digits_shards, "train.steps=2", "optim.schedule=linear")
    fit(first, run, CPU_CTX, show=False)
    longer = make_recipe(tmp_path, digits_shards, "train.steps=4", "optim.schedule=linear")
    with pytest.raises(
        AntError, match=r"over 2 steps, this recipe over 4: set optim.decay_steps=2"
    ):
        fit(longer, run, CPU_CTX, resume=True, show=False)


def test_resume_takes_the_recipes_learning_rate(tmp_path: Path, digits_shards: Path) -> None:
    run = tmp_path / "run"
    fit(make_recipe(tmp_path, digits_shards, "train.steps=2"), run, CPU_CTX, show=False)
    slower = make_recipe(tmp_path, digits_shards, "train.steps=4", "optim.lr=2e-4")
    fit(slower, run, CPU_CTX, resume=True, show=False)
    assert [r["lr"] for r in read_metrics(run)] == [1e-3, 1e-3, 2e-4, 2e-4]
    assert math.isclose(ckpt.load_checkpoint(run)["optimizer"]["param_groups"][0]["lr"], 2e-4)


def test_min_lr_above_lr_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(AntError, match=r"min_lr 0\.1 is above lr 0\.001"):
        load_recipe("recipes/digits_dit.yaml", ["optim.lr=1e-3", "optim.min_lr=0.1"])
    result = run_ant("recipe", "show", "recipes/digits_dit.yaml", "optim.min_lr=1")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "min_lr")
