"""``evaluate_during_training``: metrics of the EMA model, the same on one rank or two."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ant.core.checkpoint import load_checkpoint
from ant.core.errors import AntError
from ant.core.logbook import read_metrics
from ant.core.runtime import Runtime
from ant.evaluation import evaluate_during_training
from ant.evaluation.training import TrainingEvaluation
from ant.recipe import Recipe, load_recipe
from ant.recipe.build import build_diffusion, build_model
from ant.training.loop import fit

from .eval_helpers import make_run, use_session_cache

CPU = Runtime()
KEYS = {"eval/fd", "eval/accuracy", "eval/coverage", "eval/class_entropy", "eval/seconds"}


def ema_model(run: Path) -> tuple[torch.nn.Module, Recipe]:
    state = load_checkpoint(run)
    recipe = Recipe.model_validate(state["recipe"])
    recipe = recipe.model_copy(
        update={"eval": recipe.eval.model_copy(update={"num_samples": 12, "batch_size": 5})}
    )
    model = build_model(recipe)
    model.load_state_dict(state["ema"])
    return model.eval(), recipe


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, digits_shards: Path) -> Path:
    return make_run(tmp_path_factory.mktemp("training-eval"), digits_shards)[0]


def without_time(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if k != "eval/seconds"}


def test_metrics_for_the_logbook_leave_the_rng_untouched(
    run: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_session_cache(tmp_path_factory, monkeypatch)
    model, recipe = ema_model(run)
    diffusion = build_diffusion(recipe)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = evaluate_during_training(model, diffusion, recipe, 100, CPU)
    assert torch.equal(torch.get_rng_state(), before), "evaluation must not move the RNG"
    assert set(first) == KEYS
    assert all(isinstance(v, float) for v in first.values())
    again = evaluate_during_training(model, diffusion, recipe, 200, CPU)
    assert without_time(again) == pytest.approx(without_time(first))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, port: int, run: str, cache: str, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "ANT_CACHE": cache})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        ctx = Runtime(rank=rank, world_size=2, local_rank=rank)
        model, recipe = ema_model(Path(run))
        values = evaluate_during_training(model, build_diffusion(recipe), recipe, 1, ctx)
        Path(out, f"rank{rank}.json").write_text(json.dumps(values))
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_the_one_rank_metrics(
    run: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = use_session_cache(tmp_path_factory, monkeypatch)
    model, recipe = ema_model(run)
    single = evaluate_during_training(model, build_diffusion(recipe), recipe, 1, CPU)
    mp.spawn(_worker, args=(_free_port(), str(run), str(cache), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert without_time(ranks[0]) == without_time(ranks[1])
    assert without_time(ranks[0]) == pytest.approx(without_time(single), rel=1e-4, abs=1e-6)


TRAIN_RECIPE = """
model: {{name: DiT-Micro/2, input_size: 8, in_channels: 1, num_classes: 10}}
diffusion: {{timesteps: 100}}
data: {{shards: {shards}, num_workers: 0, shuffle_buffer: 100}}
clustering: {{objective: timestep, k: 5}}
method: {{name: uw}}
train: {{steps: 6, global_batch_size: 20, log_every: 1, ckpt_every: 100}}
sample: {{num: 4, steps: 4, sampler: ddim}}
eval: {{metrics: [fd], feature_extractor: "classifier:{shards}", num_samples: 20, batch_size: 10}}
"""


def test_eval_every_logs_curves_without_changing_training(
    tmp_path: Path,
    digits_shards: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_session_cache(tmp_path_factory, monkeypatch)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(TRAIN_RECIPE.format(shards=digits_shards))
    fit(load_recipe(str(recipe_file)), tmp_path / "plain", CPU, show=False)
    evaluated = load_recipe(str(recipe_file), ["eval.every=3"])
    fit(evaluated, tmp_path / "evaluated", CPU, show=False, on_eval=TrainingEvaluation(evaluated))
    with pytest.raises(AntError, match="given no evaluation"):
        fit(evaluated, tmp_path / "no-callback", CPU, show=False)

    def losses(run: Path) -> list[object]:
        return [record["loss"] for record in read_metrics(run) if "loss" in record]

    evals = [record for record in read_metrics(tmp_path / "evaluated") if "eval/fd" in record]
    assert [record["step"] for record in evals] == [3, 6]
    assert all(set(record) >= KEYS and record["eval/fd"] > 0 for record in evals)
    assert losses(tmp_path / "evaluated") == losses(tmp_path / "plain")
