"""``ant sample`` and the sampling library on a real (tiny, randomly perturbed) DiT."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from ant.cli import cli
from ant.core.checkpoint import checkpoint_path, save_checkpoint
from ant.recipe import Recipe, load_recipe
from ant.recipe.build import build_diffusion, build_model
from ant.sampling import generate, save_images, to_uint8
from ant.sampling.images import BORDER, MIN_CELL

from .helpers import REPO, assert_one_line_error

RECIPE = """\
model:
  name: DiT-Micro/2
  input_size: 8
  in_channels: {channels}
  num_classes: {classes}
diffusion:
  timesteps: 100
sample:
  steps: 10
  num: 4
"""


def perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's weights plus noise: DiT starts as the zero function, which samples nothing."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: value + 0.05 * torch.randn(value.shape, generator=generator)
        for name, value in model.state_dict().items()
    }


def make_run(root: Path, *, channels: int = 1, classes: int = 10) -> tuple[Path, Recipe]:
    """A run directory with one checkpoint whose EMA weights differ from its model weights."""
    recipe_file = root / "micro.yaml"
    recipe_file.write_text(RECIPE.format(channels=channels, classes=classes))
    recipe = load_recipe(str(recipe_file))
    model = build_model(recipe)
    state = {
        "recipe": recipe.model_dump(mode="json"),
        "step": 0,
        "model": perturbed(model, 1),
        "ema": perturbed(model, 2),
    }
    save_checkpoint(state, checkpoint_path(root / "run", 0))
    return root / "run", recipe


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recipe]:
    return make_run(tmp_path_factory.mktemp("sampling"))


@pytest.fixture(scope="module")
def ckpt(run: tuple[Path, Recipe]) -> Path:
    return checkpoint_path(run[0], 0)


def sample(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["sample", *(str(a) for a in args)])


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_grid_has_the_expected_size_and_depends_only_on_the_seed(
    ckpt: Path, tmp_path: Path
) -> None:
    first, again, other = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    result = sample(ckpt, "--num", 12, "--out", first)
    assert result.exit_code == 0, result.output
    assert str(first) in result.output
    with Image.open(first) as image:
        # 12 samples: 4 columns x 3 rows of 8x8 cells upscaled to 32x32, with borders.
        assert image.mode == "L"
        assert image.size == (4 * (MIN_CELL + BORDER) + BORDER, 3 * (MIN_CELL + BORDER) + BORDER)
    assert sample(ckpt, "--num", 12, "--out", again).exit_code == 0
    assert first.read_bytes() == again.read_bytes()
    assert sample(ckpt, "--num", 12, "--out", other, "--seed", 1).exit_code == 0
    assert not np.array_equal(pixels(first), pixels(other))


def test_ema_and_raw_weights_differ(run: tuple[Path, Recipe], tmp_path: Path) -> None:
    run_dir = run[0]
    assert sample(run_dir, "--out", tmp_path / "ema.png").exit_code == 0
    result = sample(run_dir, "--out", tmp_path / "raw.png", "--raw-weights")
    assert result.exit_code == 0, result.output
    assert "raw weights" in result.output
    assert not np.array_equal(pixels(tmp_path / "ema.png"), pixels(tmp_path / "raw.png"))


def test_guidance_changes_the_samples(ckpt: Path, tmp_path: Path) -> None:
    plain, guided = tmp_path / "cfg1.png", tmp_path / "cfg2.png"
    assert sample(ckpt, "--out", plain, "--cfg-scale", 1).exit_code == 0
    assert sample(ckpt, "--out", guided, "--cfg-scale", 2, "--sampler", "ddim").exit_code == 0
    assert not np.array_equal(pixels(plain), pixels(guided))


def test_samples_do_not_depend_on_the_batch_size(run: tuple[Path, Recipe]) -> None:
    run_dir, recipe = run
    model = build_model(recipe)
    model.load_state_dict(torch.load(checkpoint_path(run_dir, 0), weights_only=True)["ema"])
    diffusion = build_diffusion(recipe)

    def draw(batch_size: int) -> torch.Tensor:
        return generate(
            model,
            diffusion,
            num=5,
            steps=10,
            seed=3,
            cfg_scale=1.5,
            clip_x0=True,
            batch_size=batch_size,
        )

    whole, split = draw(5), draw(2)
    assert whole.shape == (5, 1, 8, 8)
    # The same noise; only float rounding differs between batch shapes.
    torch.testing.assert_close(whole, split, rtol=1e-4, atol=1e-4)
    assert model.training, "generate must give the model its training mode back"


def test_folder_output_resumes_and_matches_torchrun(ckpt: Path, tmp_path: Path) -> None:
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    result = sample(ckpt, "--num", 6, "--out", f"{single}/", "--batch-size", 4)
    assert result.exit_code == 0, result.output
    names = [f"sample-{i:06d}.png" for i in range(6)]
    assert sorted(p.name for p in single.iterdir()) == names
    (single / names[3]).unlink()
    result = sample(ckpt, "--num", 6, "--out", single)
    assert result.exit_code == 0, result.output
    assert "wrote 1 samples" in result.output
    assert "5 already there" in result.output

    # -n, not --num: torchrun's own parser would take --num for its --numa-binding.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    launched = subprocess.run(
        [*torchrun, "2", "-m", "ant", "sample", str(ckpt), "-n", "6", "--out", f"{sharded}/"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr
    assert "wrote 6 samples" in launched.stdout
    assert sorted(p.name for p in sharded.iterdir()) == names
    for name in names:
        assert np.array_equal(pixels(single / name), pixels(sharded / name)), name


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--class", "10"], ["class 10", "10 classes"]),
        (["--num", "0"], ["sample.num", "greater than or equal to 1"]),
        (["--steps", "1"], ["sample.steps", "greater than or equal to 2"]),
        (["--out", "grid.jpg"], ["grid.jpg", ".png"]),
    ],
)
def test_bad_options_are_one_line_errors(
    ckpt: Path, tmp_path: Path, args: list[str], fragments: list[str]
) -> None:
    result = sample(ckpt, "--out", tmp_path / "grid.png", *args)
    assert result.exit_code == 2, result.output
    assert_one_line_error(result.stderr, *fragments)


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    missing = sample(tmp_path / "nope.pt", "--out", tmp_path / "g.png")
    assert missing.exit_code == 2
    assert_one_line_error(missing.stderr, "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint\xff" * 50)
    corrupt = sample(garbage, "--out", tmp_path / "g.png")
    assert corrupt.exit_code == 2
    assert_one_line_error(corrupt.stderr, "garbage.pt", "corrupt")


def test_unconditional_latents_need_npy(tmp_path: Path) -> None:
    run_dir, _ = make_run(tmp_path, channels=4, classes=0)
    png = sample(run_dir, "--out", tmp_path / "g.png")
    assert png.exit_code == 2
    assert_one_line_error(png.stderr, "4 channels", "VAE", "--npy")
    labelled = sample(run_dir, "--out", tmp_path / "g.npy", "--npy", "--class", "3")
    assert labelled.exit_code == 2
    assert_one_line_error(labelled.stderr, "unconditional")
    raw = sample(run_dir, "--out", f"{tmp_path / 'latents'}/", "--npy", "--num", "3")
    assert raw.exit_code == 0, raw.output
    arrays = [np.load(tmp_path / "latents" / f"sample-{i:06d}.npy") for i in range(3)]
    assert all(a.shape == (4, 8, 8) and a.dtype == np.float32 for a in arrays)


def test_to_uint8_clamps_and_rounds() -> None:
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 3.0]).view(1, 1, 1, 5)
    assert to_uint8(x).flatten().tolist() == [0, 0, 128, 255, 255]
    assert to_uint8(torch.zeros(2, 3, 4, 5)).shape == (2, 4, 5, 3)


def test_save_images_names_files_by_index(tmp_path: Path) -> None:
    paths = save_images(torch.zeros(2, 3, 4, 4), tmp_path, [7, 123])
    assert [p.name for p in paths] == ["sample-000007.png", "sample-000123.png"]
    assert pixels(paths[1]).shape == (4, 4, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths]


def test_key_value_overrides_equal_their_flags(ckpt: Path, tmp_path: Path) -> None:
    by_flag, by_key = tmp_path / "flag.png", tmp_path / "key.png"
    assert sample(ckpt, "--out", by_flag, "--seed", 3, "--cfg-scale", 2).exit_code == 0
    result = sample(ckpt, "sample.seed=3", "sample.cfg_scale=2", "--out", by_key)
    assert result.exit_code == 0, result.output
    assert "cfg 2, seed 3" in result.output
    assert by_flag.read_bytes() == by_key.read_bytes()
    refused = sample(ckpt, "diffusion.timesteps=10", "--out", tmp_path / "no.png")
    assert refused.exit_code == 2 and "cannot change" in refused.output
