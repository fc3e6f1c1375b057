"""ant export --to diffusers: the transformer equals ant's DiT, the scheduler carries the run's
diffusion, a pixel run loads with from_pretrained and a latent run samples through DiTPipeline
(tiny local models, no download)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ant.core.errors import AntError
from ant.models.adm import ADMUNet
from ant.models.diffusers_dit import timestep_frequency_fix
from ant.models.dit import DiT
from ant.models.routing import RoutingSpec
from ant.recipe import load_recipe
from ant.recipe.build import build_diffusion
from ant.sampling.export import export_diffusers, scheduler_for, transformer_for
from ant.sampling.loading import SamplingModel, load_sampling_model
from ant.training.loop import fit

from .helpers import assert_one_line_error, run_ant
from .test_init_weights import randomize, tiny_dit
from .test_latent import image_shards, latent_shards, vae_dir, write_recipe  # noqa: F401
from .test_training import CPU_CTX, make_recipe

diffusers = pytest.importorskip("diffusers")


def tiny(**options: object) -> DiT:
    return randomize(tiny_dit(**options))  # type: ignore[return-value]


def outputs(
    model: DiT, transformer: object, classes: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both models' outputs on one input in ``dtype`` (float64 agrees to about 1e-7: both
    compute the timestep features in float32)."""
    model.to(dtype)
    transformer.to(dtype)  # type: ignore[attr-defined]
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, model.in_channels, 8, 8, generator=generator, dtype=torch.float64).to(dtype)
    t = torch.tensor([0, 250, 999])
    y = torch.tensor([1, 4, 9]) if classes else torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        ours = model(x, t, y if classes else None)
        theirs = transformer(x, timestep=t, class_labels=y).sample  # type: ignore[operator]
    return ours, theirs


@pytest.mark.parametrize(
    "options",
    [{}, {"class_dropout": 0.0}, {"num_classes": 0}, {"learn_sigma": False, "in_channels": 1}],
    ids=["guided", "no-null-row", "unconditional", "fixed-sigma"],
)
def test_with_diffusers_frequencies_the_export_is_exact(options: dict[str, object]) -> None:
    model = tiny(freq_shift=1.0, **options)
    transformer = transformer_for(model)
    ours, theirs = outputs(model, transformer, model.num_classes, torch.float64)
    torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=1e-5)
    ours, theirs = outputs(model, transformer, model.num_classes)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-3)


def test_the_paper_frequencies_need_the_one_line_fix() -> None:
    model = tiny()
    transformer = transformer_for(model)
    ours, stock = outputs(model, transformer, 10)
    deviation = float((stock - ours).norm() / ours.norm())
    assert deviation > 0.05, "diffusers' shift-1 frequencies change the output"
    exec(timestep_frequency_fix(0.0), {"transformer": transformer})
    ours, fixed = outputs(model, transformer, 10, torch.float64)
    torch.testing.assert_close(fixed, ours, atol=1e-6, rtol=1e-5)


def test_the_scheduler_carries_the_runs_diffusion(tmp_path: Path, digits_shards: Path) -> None:
    recipe = make_recipe(tmp_path, digits_shards, "diffusion.prediction=v", "sample.clip_x0=false")
    diffusion = build_diffusion(recipe)
    scheduler = scheduler_for(diffusion, recipe)
    torch.testing.assert_close(
        scheduler.alphas_cumprod.double(), diffusion.alphas_cumprod.double(), atol=1e-6, rtol=0
    )
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.clip_sample is False
    assert type(scheduler).__name__ == "DDIMScheduler"  # the recipe samples with DDIM


def test_a_pixel_run_exports_and_loads_offline(tmp_path: Path, digits_shards: Path) -> None:
    run = tmp_path / "run"
    fit(make_recipe(tmp_path, digits_shards, "train.steps=2"), run, CPU_CTX, show=False)
    out = tmp_path / "out"
    result = run_ant("export", str(run), "--to", "diffusers", str(out))
    assert result.returncode == 0, result.stderr
    assert "downscale_freq_shift = 0" in result.stdout
    transformer = diffusers.DiTTransformer2DModel.from_pretrained(out, subfolder="transformer")
    scheduler = diffusers.DDIMScheduler.from_pretrained(out, subfolder="scheduler")
    manifest = json.loads((out / "ant_export.json").read_text())
    assert manifest["step"] == 2 and manifest["weights"] == "EMA" and not manifest["exact"]
    exec(manifest["timestep_frequency_fix"], {"transformer": transformer})
    loaded = load_sampling_model(run)
    ema = loaded.model.eval()
    randomize(ema)  # the trained weights are still near adaLN-zero: compare on random ones too
    fresh = transformer_for(ema)
    exec(manifest["timestep_frequency_fix"], {"transformer": fresh})
    ours, theirs = outputs(ema, fresh, 10)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-3)
    trained = load_sampling_model(run).model.eval()
    ours, theirs = outputs(trained, transformer.eval(), 10)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-3)
    assert scheduler.config.num_train_timesteps == 1000
    again = run_ant("export", str(run), "--to", "diffusers", str(out))
    assert again.returncode == 2
    assert_one_line_error(again.stderr, "not empty", "--overwrite")


def test_a_latent_run_samples_through_dit_pipeline(
    tmp_path: Path,
    vae_dir: Path,  # noqa: F811
    latent_shards: Path,  # noqa: F811
    image_shards: Path,  # noqa: F811
) -> None:
    path = write_recipe(tmp_path, latent_shards, vae_dir, image_shards, "offline")
    recipe = load_recipe(str(path), ["train.steps=2", "model.freq_shift=1"])
    run = tmp_path / "run"
    fit(recipe, run, CPU_CTX, show=False)
    out = tmp_path / "pipeline"
    lines = export_diffusers(load_sampling_model(run), out, str(run), overwrite=False)
    assert not any("freq" in line for line in lines), "freq_shift=1 exports exactly"
    pipe = diffusers.DiTPipeline.from_pretrained(out)
    assert pipe.vae.config.scaling_factor == 0.18215  # the scale the latents were encoded with
    images = pipe(
        class_labels=[1, 7],
        num_inference_steps=3,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (2, 16, 16, 3) and bool(torch.isfinite(torch.from_numpy(images)).all())
    ours, theirs = outputs(load_sampling_model(run).model.eval(), pipe.transformer, 10)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-3)


def test_an_adm_is_refused_in_one_line(tmp_path: Path, digits_shards: Path) -> None:
    recipe = make_recipe(tmp_path, digits_shards)
    model = ADMUNet(
        input_size=8,
        in_channels=1,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4,),
        num_head_channels=16,
        num_classes=10,
    )
    loaded = SamplingModel(model, build_diffusion(recipe), recipe, 0, "EMA")
    with pytest.raises(AntError, match="not a DiT; the ADM U-Net has no exact diffusers"):
        export_diffusers(loaded, tmp_path / "out", "run", overwrite=False)
    assert not (tmp_path / "out").exists()


def test_a_routed_dit_and_a_file_as_folder_are_refused_in_one_line(
    tmp_path: Path, digits_shards: Path
) -> None:
    recipe = make_recipe(tmp_path, digits_shards)
    routed = tiny(in_channels=1, routing=RoutingSpec(0.8, 4.0, 1000))
    loaded = SamplingModel(routed, build_diffusion(recipe), recipe, 0, "EMA")
    with pytest.raises(AntError, match=r"trained with model\.routing"):
        export_diffusers(loaded, tmp_path / "out", "run", overwrite=False)
    assert not (tmp_path / "out").exists()
    plain = SamplingModel(tiny(in_channels=1), build_diffusion(recipe), recipe, 0, "EMA")
    file = tmp_path / "a-file"
    file.write_text("")
    with pytest.raises(AntError, match="is a file: give a folder"):
        export_diffusers(plain, file, "run", overwrite=True)
