"""Tiny checkpoints, local feature-extractor weights and image folders for the evaluation tests."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception
from PIL import Image
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from ant.core.checkpoint import checkpoint_path, save_checkpoint
from ant.evaluation.classifier import load_labelled
from ant.recipe import Recipe, load_recipe
from ant.recipe.build import build_model

RECIPE = """\
model:
  name: DiT-Micro/2
  input_size: 8
  in_channels: 1
  num_classes: {classes}
diffusion:
  timesteps: 100
data:
  shards: {shards}
train:
  timestep_range: {span}
sample:
  steps: 5
eval:
  metrics: [fd]
  feature_extractor: classifier:{shards}
  num_samples: 40
  batch_size: 16
"""


def use_session_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Point ``ANT_CACHE`` at the session's temporary folder: the classifier is trained once."""
    path = tmp_path_factory.getbasetemp() / "ant-cache"
    monkeypatch.setenv("ANT_CACHE", str(path))
    return path


def perturbed(model: torch.nn.Module, seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """The model's weights plus noise: DiT starts as the zero function, which samples nothing."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: value + scale * torch.randn(value.shape, generator=generator)
        for name, value in model.state_dict().items()
    }


def make_run(
    root: Path,
    shards: Path,
    *,
    classes: int = 10,
    seed: int = 1,
    span: tuple[int, int] | None = None,
) -> tuple[Path, Recipe]:
    """A run directory with one DiT-Micro checkpoint (8x8 grey, T = 100) of perturbed weights."""
    recipe_file = root / f"micro-{seed}.yaml"
    text = "null" if span is None else f"[{span[0]}, {span[1]}]"
    recipe_file.write_text(RECIPE.format(classes=classes, shards=shards, span=text))
    recipe = load_recipe(str(recipe_file))
    model = build_model(recipe)
    state = {
        "recipe": recipe.model_dump(mode="json"),
        "step": 7,
        "model": perturbed(model, seed),
        "ema": perturbed(model, seed + 100),
    }
    run = root / f"run-{seed}"
    save_checkpoint(state, checkpoint_path(run, 7))
    return run, recipe


def random_inception_weights(path: Path) -> Path:
    """torch-fidelity's Inception-v3 with a fixed random initialisation, saved to ``path``.

    The convolutions get He initialisation so that features keep their scale through the
    network (PyTorch's default initialisation shrinks them to ~1e-8).
    """

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            return None

    no_download = mock.patch.object(
        fidelity_inception, "load_state_dict_from_url", lambda *a, **k: {}
    )
    with no_download, torch.random.fork_rng():
        torch.manual_seed(0)
        network = Unloaded("inception-v3-compat", ["2048"])
        for module in network.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(network.state_dict(), path)
    return path


def digits_uint8(shards: Path, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` digits of the shards as uint8 ``[N, 1, 8, 8]`` and their labels."""
    images, labels, _ = load_labelled(str(shards))
    return images[:count], labels[:count]


def write_pngs(images: torch.Tensor, folder: Path) -> Path:
    """Write uint8 ``[N, C, H, W]`` images as PNGs into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        picture = image[..., 0] if image.shape[-1] == 1 else image
        Image.fromarray(np.ascontiguousarray(picture)).save(folder / f"img-{index:04d}.png")
    return folder


def noisy(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """``images`` plus Gaussian noise of ``sigma`` grey levels, clamped to uint8."""
    generator = torch.Generator().manual_seed(seed)
    noise = sigma * torch.randn(images.shape, generator=generator)
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)
