"""``ant analyze affinity``: group gradients, sketches, the CLI outputs and its errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ant.cli import cli
from ant.clustering import expand_affinity
from ant.core import checkpoint as ckpt
from ant.core.errors import AntError
from ant.experiments.affinity import (
    CountSketch,
    cosine_matrix,
    gap_spearman,
    group_bounds,
)
from ant.experiments.affinity_run import (
    AffinityResult,
    AffinitySettings,
    compute_affinity,
    load_samples,
)
from ant.experiments.group_grads import group_inputs
from ant.recipe import load_recipe
from ant.recipe.build import build_model
from ant.sampling.loading import load_sampling_model
from ant.training.task_grads import trainable

from .helpers import assert_one_line_error, run_ant

RECIPE = """
model: {name: DiT-Micro/2, input_size: 8, in_channels: 1, num_classes: 10, class_dropout: 0.1}
diffusion: {timesteps: 1000, schedule: cosine, learn_sigma: true}
"""

GROUPS, SAMPLES = 5, 20


def perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's weights plus noise: DiT starts with zero gates, whose gradients are sparse."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: value + 0.05 * torch.randn(value.shape, generator=generator)
        for name, value in model.state_dict().items()
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with two checkpoints (steps 1 and 2) of a perturbed DiT-Micro."""
    root = tmp_path_factory.mktemp("affinity")
    (root / "recipe.yaml").write_text(RECIPE)
    recipe = load_recipe(str(root / "recipe.yaml"))
    model = build_model(recipe)
    for step in (1, 2):
        state = {
            "recipe": recipe.model_dump(mode="json"),
            "step": step,
            "model": perturbed(model, 10 + step),
            "ema": perturbed(model, step),
        }
        ckpt.save_checkpoint(state, ckpt.checkpoint_path(root / "run", step))
    return root / "run"


@pytest.fixture(scope="module")
def settings(run_dir: Path, digits_shards: Path) -> AffinitySettings:
    return AffinitySettings(
        checkpoints=(str(run_dir),),
        data=str(digits_shards),
        groups=GROUPS,
        samples=SAMPLES,
        batch_size=7,
        group_block=2,
        sketch_dim=1 << 14,
        device="cpu",
    )


@pytest.fixture(scope="module")
def exact(settings: AffinitySettings) -> AffinityResult:
    return compute_affinity(replace(settings, exact=True), progress=False)


def off_diagonal(matrix: np.ndarray) -> np.ndarray:
    rows, cols = np.triu_indices(matrix.shape[0], k=1)
    return matrix[rows, cols]


def brute_force(settings: AffinitySettings) -> np.ndarray:
    """Per group, one plain backward of the mean loss over all samples; cosine of full grads."""
    loaded = load_sampling_model(settings.checkpoints[0])
    model, diffusion = loaded.model.eval(), loaded.diffusion
    x0, y = load_samples(settings.data, settings.samples, settings.seed, settings.batch_size)
    bounds = group_bounds(diffusion.num_timesteps, settings.groups)
    params = [p for _, p in trainable(model)]
    rows = []
    for group in range(settings.groups):
        t, noise = group_inputs(settings.seed, range(len(x0)), [group], bounds, x0.shape[1:])
        x_t = diffusion.q_sample(x0, t[0], noise[0])
        output = model(x_t, t[0], y)
        loss = diffusion.training_losses(output, x0, x_t, t[0], noise[0]).loss.mean()
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    full = torch.stack(rows).double()
    norms = full.norm(dim=1)
    return ((full @ full.T) / torch.outer(norms, norms)).numpy()


def test_exact_mode_equals_brute_force_autograd(
    settings: AffinitySettings, exact: AffinityResult
) -> None:
    reference = brute_force(settings)
    assert exact.affinity.shape == (GROUPS, GROUPS)
    np.testing.assert_allclose(exact.affinity, reference, atol=1e-5, rtol=0)
    assert exact.metadata["estimate"] == "exact" and exact.metadata["sketch_dim"] is None


def test_sketch_agrees_with_exact(settings: AffinitySettings, exact: AffinityResult) -> None:
    sketched = compute_affinity(settings, progress=False)
    assert sketched.metadata["estimate"] == "sketch"
    assert sketched.metadata["sketch_dim"] == 1 << 14 < sketched.metadata["parameters"]
    a, b = off_diagonal(sketched.affinity), off_diagonal(exact.affinity)
    assert np.ptp(b) > 0.1
    assert np.corrcoef(a, b)[0, 1] >= 0.99
    assert np.abs(a - b).max() < 0.05


def test_count_sketch_is_linear_and_preserves_inner_products() -> None:
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(3, 200_000, generator=generator)
    vectors[1] += vectors[0]
    sketch = CountSketch(200_000, 1 << 12, seed=7)
    sketched = sketch.apply(vectors.clone())
    np.testing.assert_allclose(
        sketch.apply(vectors[:2].sum(0, keepdim=True).clone())[0].numpy(),
        sketched[:2].sum(0).numpy(),
        rtol=1e-4,
        atol=1e-3,
    )
    error = cosine_matrix(sketched) - cosine_matrix(vectors)
    assert np.abs(error).max() < 4 / np.sqrt(1 << 12)
    assert torch.equal(CountSketch(200_000, 1 << 12, seed=7).apply(vectors.clone()), sketched)
    assert CountSketch(10, 64, seed=0).identity


def test_gap_spearman_and_group_bounds() -> None:
    decaying = np.exp(-np.abs(np.subtract.outer(np.arange(6), np.arange(6))))
    assert gap_spearman(decaying) == pytest.approx(-1.0)
    assert gap_spearman(np.ones((4, 4))) is None
    assert group_bounds(1000, 100)[:2] == [(0, 9), (10, 19)]
    assert group_bounds(1000, 100)[-1] == (990, 999)
    with pytest.raises(ValueError, match="divides 1000"):
        group_bounds(1000, 7)


def test_cli_writes_matrix_metadata_and_heatmaps(
    run_dir: Path, digits_shards: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["--data", str(digits_shards), "--out", str(out), "-g", str(GROUPS), "-n", "10"]
    result = CliRunner().invoke(
        cli, ["analyze", "affinity", str(run_dir), *args, "--sketch-dim", "4096"]
    )
    assert result.exit_code == 0, result.output
    assert "Spearman(gap, affinity)" in result.stdout
    matrix = np.load(out / "affinity.npy")
    assert matrix.dtype == np.float32 and matrix.shape == (GROUPS, GROUPS)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-6)
    meta = json.loads((out / "affinity.json").read_text())
    assert meta["groups"] == GROUPS and meta["group_width"] == 200 and meta["timesteps"] == 1000
    assert meta["group_bounds"][0] == [0, 199] and meta["group_bounds"][-1] == [800, 999]
    assert meta["samples"] == 10 and meta["sketch_dim"] == 4096 and meta["seed"] == 0
    assert (meta["weights"], meta["mode"], meta["loss"]) == ("ema", "eval", "hybrid")
    assert meta["checkpoints"][0]["step"] == 2 and len(meta["group_log_snr"]) == GROUPS
    assert -1 <= meta["spearman_gap"] <= 1 and meta["seconds"] > 0
    for name in ("affinity_timestep.png", "affinity_logsnr.png"):
        assert Image.open(out / name).size[0] > 300
    assert expand_affinity(matrix, 1000).shape == (1000, 1000)


def test_average_over_checkpoints_is_the_mean_of_single_ones(
    settings: AffinitySettings, run_dir: Path
) -> None:
    first, second = (str(path) for _, path in ckpt.list_checkpoints(run_dir))
    both = compute_affinity(replace(settings, checkpoints=(first, second)), progress=False)
    singles = [
        compute_affinity(replace(settings, checkpoints=(c,)), progress=False).affinity
        for c in (first, second)
    ]
    np.testing.assert_allclose(both.affinity, (singles[0] + singles[1]) / 2, atol=1e-12)
    assert not np.allclose(singles[0], singles[1])
    assert [c["step"] for c in both.metadata["checkpoints"]] == [1, 2]


def test_raw_weights_and_train_mode_are_recorded(settings: AffinitySettings) -> None:
    result = compute_affinity(
        replace(settings, raw_weights=True, train_mode=True, samples=4, groups=2),
        progress=False,
    )
    assert (result.metadata["weights"], result.metadata["mode"]) == ("raw", "train")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"groups": 7}, "divides 1000"),
        ({"checkpoints": ("missing.pt",)}, "checkpoint not found"),
        ({"data": "/nonexistent/shards"}, "/nonexistent/shards"),
        ({"samples": 5000}, "pass --samples"),
        ({"exact": True, "max_memory_gib": 1e-4}, "--max-memory"),
        ({"batch_size": 0}, "--batch"),
    ],
)
def test_bad_input_is_one_line_error(
    settings: AffinitySettings, change: dict[str, object], fragment: str
) -> None:
    with pytest.raises(AntError, match=None) as info:
        compute_affinity(replace(settings, **change), progress=False)  # type: ignore[arg-type]
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_corrupt_checkpoint_exits_2_with_one_line(digits_shards: Path, tmp_path: Path) -> None:
    bad = tmp_path / "step-0000001.pt"
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    result = run_ant(
        "analyze", "affinity", str(bad), "--data", str(digits_shards), "--out", str(tmp_path)
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "corrupt")
