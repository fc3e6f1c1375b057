"""Latent diffusion: the VAE, ``ant data encode``, online encoding, decoding for sample and eval.

Every VAE here is a tiny randomly initialised ``AutoencoderKL`` saved to a temporary folder (no
download): two blocks, so a downsampling factor of 2 (16x16 RGB digits -> 4x8x8 latents).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_digits

from ant.cli import cli
from ant.core.errors import AntError
from ant.core.logbook import read_metrics
from ant.core.runtime import Runtime
from ant.data import encode as encode_module
from ant.data import make_loader, read_meta
from ant.data.encode import STATE_NAME, encode_shards
from ant.data.loader import ShardLoader
from ant.data.pack import pack
from ant.data.vae import Vae, VaeSpec, keyed_noise
from ant.evaluation.report import EvalReport
from ant.recipe import load_recipe
from ant.recipe.latent import recipe_vae, training_encoder
from ant.training.loop import fit

from .eval_helpers import use_session_cache
from .helpers import REPO, assert_one_line_error, run_ant

diffusers = pytest.importorskip("diffusers")

CPU = Runtime()
COUNT = 120
SHARD_SIZE = 40

RECIPE = """
model: {{name: DiT-Micro/2, input_size: 8, in_channels: 4, num_classes: 10}}
diffusion: {{timesteps: 100}}
data: {{shards: {shards}, num_workers: 0, shuffle_buffer: 50}}
vae: {{name_or_path: {vae}, encode: {mode}, posterior: mean}}
clustering: {{objective: timestep, k: 2}}
method: {{name: uw}}
train: {{steps: 3, global_batch_size: 8, log_every: 1, ckpt_every: 100}}
sample: {{num: 4, steps: 4, sampler: ddim, clip_x0: false}}
eval: {{metrics: [fd], feature_extractor: "classifier:{images}", num_samples: 12, batch_size: 6}}
"""


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        layers_per_block=1,
    )
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def image_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first COUNT digits upscaled to 16x16 RGB, packed by ``ant data pack npz:``."""
    root = tmp_path_factory.mktemp("images")
    digits = load_digits()
    grey = np.round(digits.images[:COUNT] * 255 / 16).astype(np.uint8)
    rgb = np.stack(
        [
            np.asarray(Image.fromarray(g).resize((16, 16), Image.Resampling.BICUBIC).convert("RGB"))
            for g in grey
        ]
    )
    np.savez(root / "digits.npz", x=rgb, y=digits.target[:COUNT])
    pack(f"npz:{root / 'digits.npz'}", root / "shards", shard_size=SHARD_SIZE)
    return root / "shards"


@pytest.fixture(scope="module")
def latent_shards(
    tmp_path_factory: pytest.TempPathFactory, vae_dir: Path, image_shards: Path
) -> Path:
    out = tmp_path_factory.mktemp("latents") / "shards"
    encode_shards(
        str(image_shards),
        out,
        VaeSpec(str(vae_dir)),
        posterior="mean",
        batch_size=16,
        progress=False,
    )
    return out


def all_samples(shards: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    loader = make_loader(
        str(shards),
        batch_size=1000,
        rank=0,
        world_size=1,
        seed=0,
        resampled=False,
        shuffle_buffer=0,
        return_keys=True,
    )
    batches = list(loader)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    return x, y, [key for b in batches for key in b[2]]


def write_recipe(tmp_path: Path, shards: Path, vae: Path, images: Path, mode: str) -> Path:
    path = tmp_path / f"latent-{mode}.yaml"
    path.write_text(RECIPE.format(shards=shards, vae=vae, mode=mode, images=images))
    return path


def test_the_vae_encodes_and_decodes_with_its_scale_factor(vae_dir: Path) -> None:
    vae = Vae.load(VaeSpec(str(vae_dir)))
    assert (vae.scale, vae.factor, vae.latent_channels) == (0.18215, 2, 4)
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    reference = diffusers.AutoencoderKL.from_pretrained(vae_dir).eval()
    with torch.no_grad():
        posterior = reference.encode(images).latent_dist
        mean = vae.encode(images, posterior="mean")
        assert mean.shape == (3, 4, 8, 8) and mean.dtype == torch.float32
        torch.testing.assert_close(mean, posterior.mean * 0.18215)
        noise = torch.randn(3, 4, 8, 8)
        drawn = vae.encode(images, posterior="sample", noise=noise)
        torch.testing.assert_close(drawn, (posterior.mean + posterior.std * noise) * 0.18215)
        decoded = vae.decode(mean)
        assert decoded.shape == (3, 3, 16, 16)
        assert decoded.min() >= -1 and decoded.max() <= 1
        torch.testing.assert_close(decoded, reference.decode(posterior.mean).sample.clamp(-1, 1))
    halved = Vae.load(VaeSpec(str(vae_dir), scale=0.5))
    torch.testing.assert_close(halved.encode(images, posterior="mean"), posterior.mean * 0.5)
    grey = images[:, :1]
    torch.testing.assert_close(
        vae.encode(grey, posterior="mean"), vae.encode(grey.expand(-1, 3, -1, -1), posterior="mean")
    )
    assert vae.image_shape((4, 8, 8)) == (3, 16, 16) and vae.latent_shape((1, 16, 16)) == (4, 8, 8)
    bf16 = Vae.load(VaeSpec(str(vae_dir), precision="bf16"))
    low = bf16.encode(images, posterior="mean")
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, mean, atol=0.05, rtol=0.05)


def test_data_encode_writes_latent_shards_that_the_loader_reads(
    tmp_path: Path, vae_dir: Path, image_shards: Path
) -> None:
    out = tmp_path / "latents"
    result = run_ant(
        "data", "encode", str(image_shards), str(out), "--vae", str(vae_dir), "--batch-size", "16"
    )
    assert result.returncode == 0, result.stderr
    assert f"encoded {COUNT} latents (4x8x8, scale 0.18215) into 3 shard(s)" in result.stdout
    meta = read_meta(out)
    assert (meta.count, meta.shape, meta.format, meta.shard_counts) == (
        COUNT,
        [8, 8, 4],
        "npy",
        [SHARD_SIZE] * 3,
    )
    assert meta.latent is not None
    assert meta.latent["vae"] == str(vae_dir) and meta.latent["scale"] == 0.18215
    assert meta.latent["source_shards"] == str(image_shards.resolve())
    assert meta.latent["image_shape"] == [16, 16, 3] and meta.latent["posterior"] == "sample"
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", *meta.shards]

    latents, labels, keys = all_samples(out)
    _, image_labels, image_keys = all_samples(image_shards)
    assert latents.shape == (COUNT, 4, 8, 8)
    assert keys == image_keys and labels.tolist() == image_labels.tolist()
    assert labels.tolist() == load_digits().target[:COUNT].tolist()

    # The posterior noise is seeded per sample: another batch size gives the same latents.
    again = tmp_path / "again"
    encode_shards(str(image_shards), again, VaeSpec(str(vae_dir)), batch_size=7, progress=False)
    torch.testing.assert_close(all_samples(again)[0], latents, atol=1e-5, rtol=1e-5)
    vae = Vae.load(VaeSpec(str(vae_dir)))
    images = all_samples(image_shards)[0][:5]
    noise = keyed_noise(0, keys[:5], (4, 8, 8))
    expected = vae.encode(images, posterior="sample", noise=noise)
    torch.testing.assert_close(latents[:5], expected, atol=1e-5, rtol=1e-5)


def test_flip_stores_the_latent_of_each_flipped_image(
    tmp_path: Path, vae_dir: Path, image_shards: Path, latent_shards: Path
) -> None:
    out = tmp_path / "flipped"
    meta = encode_shards(
        str(image_shards),
        out,
        VaeSpec(str(vae_dir)),
        flip=True,
        posterior="mean",
        batch_size=16,
        progress=False,
    )
    assert meta is not None and meta.count == 2 * COUNT and meta.latent is not None
    assert meta.shard_counts == [2 * SHARD_SIZE] * 3 and meta.latent["flip"] is True
    latents, labels, keys = all_samples(out)
    assert keys[:4] == ["00000000", "00000000-flip", "00000001", "00000001-flip"]
    assert labels[0::2].tolist() == labels[1::2].tolist()
    plain, _, plain_keys = all_samples(latent_shards)
    assert keys[0::2] == plain_keys
    torch.testing.assert_close(latents[0::2], plain, atol=1e-5, rtol=1e-5)
    images = all_samples(image_shards)[0][:6]
    vae = Vae.load(VaeSpec(str(vae_dir)))
    flipped = vae.encode(images.flip(-1), posterior="mean")
    torch.testing.assert_close(latents[1:12:2], flipped, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(flipped, plain[:6].flip(-1), atol=1e-3)


def test_an_interrupted_encode_resumes_and_leaves_nothing_half_written(
    tmp_path: Path, vae_dir: Path, image_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "latents"
    spec = VaeSpec(str(vae_dir))
    real = encode_module._encode_shard
    done: list[str] = []

    def stop_at_second(*args: object, **kwargs: object) -> None:
        target = args[3]
        assert isinstance(target, Path)
        if done:
            raise KeyboardInterrupt
        real(*args, **kwargs)  # type: ignore[arg-type]
        done.append(target.name)

    monkeypatch.setattr(encode_module, "_encode_shard", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        encode_shards(str(image_shards), out, spec, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [STATE_NAME, "shard-000000.tar"]
    with pytest.raises(AntError, match=r"not a packed|meta.json"):
        make_loader(str(out), batch_size=4, rank=0, world_size=1, seed=0)
    with pytest.raises(AntError, match=r"not an unfinished encode with these settings"):
        encode_shards(str(image_shards), out, spec, seed=1, progress=False)

    monkeypatch.setattr(encode_module, "_encode_shard", real)
    first = (out / "shard-000000.tar").stat().st_mtime_ns
    meta = encode_shards(str(image_shards), out, spec, batch_size=9, progress=False)
    assert meta is not None and meta.count == COUNT
    assert (out / "shard-000000.tar").stat().st_mtime_ns == first
    assert not (out / STATE_NAME).exists()
    fresh = tmp_path / "fresh"
    encode_shards(str(image_shards), fresh, spec, progress=False)
    torch.testing.assert_close(all_samples(out)[0], all_samples(fresh)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(AntError, match=r"already holds a finished data set"):
        encode_shards(str(image_shards), out, spec, progress=False)


def test_torchrun_ranks_share_the_shards_and_write_the_same_latents(
    tmp_path: Path, vae_dir: Path, image_shards: Path
) -> None:
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    encode_shards(str(image_shards), single, VaeSpec(str(vae_dir)), progress=False)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    command = ["data", "encode", str(image_shards), str(sharded), "--vae", str(vae_dir)]
    launched = subprocess.run(
        [*torchrun, "2", "-m", "ant", *command],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert launched.returncode == 0, launched.stderr
    assert launched.stdout.count("encoded 120 latents") == 1
    assert read_meta(sharded).shard_counts == read_meta(single).shard_counts
    one, many = all_samples(single), all_samples(sharded)
    assert one[2] == many[2]
    torch.testing.assert_close(one[0], many[0], atol=1e-5, rtol=1e-5)


def test_a_missing_vae_or_diffusers_is_one_line_and_exit_code_2(
    tmp_path: Path, vae_dir: Path, image_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_ant("data", "encode", str(image_shards), str(tmp_path / "out"), "--vae", "nope/")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "VAE folder 'nope/' does not exist", "save_pretrained")
    empty_cache = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = run_ant(
        "data",
        "encode",
        str(image_shards),
        str(tmp_path / "out"),
        "--vae",
        "stabilityai/sd-vae-ft-ema",
        env=empty_cache,
    )
    assert result.returncode == 2
    assert_one_line_error(
        result.stderr, "'stabilityai/sd-vae-ft-ema' is neither a local folder nor in the local"
    )
    assert not (tmp_path / "out").exists()
    (tmp_path / "no-config").mkdir()
    with pytest.raises(AntError, match=r"has no config.json"):
        Vae.load(VaeSpec(str(tmp_path / "no-config")))
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(AntError, match=r"needs diffusers.*pip install 'ant-diffusion\[latent\]'"):
        Vae.load(VaeSpec(str(vae_dir)))


def test_recipes_are_checked_against_the_vae_and_the_data(
    tmp_path: Path, vae_dir: Path, image_shards: Path, latent_shards: Path
) -> None:
    offline = write_recipe(tmp_path, latent_shards, vae_dir, image_shards, "offline")
    with pytest.raises(AntError, match=r"sample.clip_x0: latents are not confined"):
        load_recipe(str(offline), ["sample.clip_x0=true"])
    with pytest.raises(AntError, match=r"vae.encode: input should be 'offline' or 'online'"):
        load_recipe(str(offline), ["vae.encode=lazy"])
    recipe = load_recipe(str(offline), ["model.in_channels=3"])
    with pytest.raises(AntError, match=r"model.in_channels is 3 but the VAE .* set model"):
        recipe_vae(recipe, "cpu")
    with pytest.raises(AntError, match=r"hold images but vae.encode is offline: encode them"):
        training_encoder(load_recipe(str(offline), [f"data.shards={image_shards}"]), CPU.device)
    with pytest.raises(AntError, match=r"hold latents .* but vae.encode is online"):
        training_encoder(load_recipe(str(offline), ["vae.encode=online"]), CPU.device)
    with pytest.raises(AntError, match=r"set model.input_size=8"):
        training_encoder(load_recipe(str(offline), ["model.input_size=4"]), CPU.device)
    online = load_recipe(str(offline), [f"data.shards={image_shards}", "vae.encode=online"])
    with pytest.raises(AntError, match=r"16x16 images, .* into 8x8 latents, but model.input_size"):
        training_encoder(
            online.model_copy(update={"model": online.model.model_copy(update={"input_size": 4})}),
            CPU.device,
        )
    with pytest.raises(AntError, match=r"scaled by 0.18215 but the VAE scale is 0.5"):
        training_encoder(load_recipe(str(offline), ["vae.scale=0.5"]), CPU.device)
    assert training_encoder(load_recipe(str(offline)), CPU.device) is None
    missing = load_recipe(str(offline), [f"vae.name_or_path={tmp_path / 'gone'}"])
    with pytest.raises(AntError, match=r"does not exist"):
        fit(missing, tmp_path / "run", CPU, show=False)
    assert not (tmp_path / "run").exists()


def test_online_and_offline_encoding_train_on_the_same_batches(
    tmp_path: Path, vae_dir: Path, image_shards: Path, latent_shards: Path
) -> None:
    def loader(shards: Path) -> ShardLoader:  # type: ignore[type-arg]
        return make_loader(str(shards), batch_size=8, rank=0, world_size=1, seed=3)

    vae = Vae.load(VaeSpec(str(vae_dir)))
    (images, labels), (latents, latent_labels) = (
        next(iter(loader(image_shards))),
        next(iter(loader(latent_shards))),
    )
    assert labels.tolist() == latent_labels.tolist()
    torch.testing.assert_close(vae.encode(images, posterior="mean"), latents, atol=1e-5, rtol=1e-5)

    runs = {}
    for mode, shards in (("offline", latent_shards), ("online", image_shards)):
        recipe = load_recipe(str(write_recipe(tmp_path, shards, vae_dir, image_shards, mode)))
        fit(recipe, tmp_path / mode, CPU, show=False)
        runs[mode] = [record["loss"] for record in read_metrics(tmp_path / mode)]
        grid = Image.open(tmp_path / mode / "samples" / "final.png")
        assert grid.mode == "RGB" and grid.size == (2 + 2 * 34, 2 + 2 * 34)
    assert len(runs["online"]) == 3
    assert runs["online"] == pytest.approx(runs["offline"], rel=1e-4)


def test_pack_encode_train_sample_and_eval_decode_through_the_vae(
    tmp_path: Path,
    vae_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_session_cache(tmp_path_factory, monkeypatch)
    images, latents = tmp_path / "images", tmp_path / "latents"
    grey = np.round(load_digits().images[:60] * 255 / 16).astype(np.uint8)
    np.savez(tmp_path / "digits.npz", x=grey, y=load_digits().target[:60])
    steps = [
        ("data", "pack", f"npz:{tmp_path / 'digits.npz'}", str(images), "--image-size", "16"),
        ("data", "encode", str(images), str(latents), "--vae", str(vae_dir), "--flip"),
    ]
    for args in steps:
        result = run_ant(*args)
        assert result.returncode == 0, result.stderr
    assert read_meta(latents).count == 120 and read_meta(latents).shape == [8, 8, 4]
    recipe = write_recipe(tmp_path, latents, vae_dir, images, "offline")
    run = tmp_path / "run"
    result = run_ant("train", str(recipe), "--run-dir", str(run), "train.ckpt_every=3")
    assert result.returncode == 0, result.stderr
    assert (run / "samples" / "final.png").is_file()

    result = run_ant("sample", str(run), "--num", "3", "--out", f"{tmp_path / 'samples'}/")
    assert result.returncode == 0, result.stderr
    for i in range(3):
        picture = Image.open(tmp_path / "samples" / f"sample-{i:06d}.png")
        assert picture.size == (16, 16) and picture.mode == "RGB"
    result = run_ant("sample", str(run), "--num", "2", "--npy", "--out", str(tmp_path / "z.npy"))
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "z.npy").shape == (2, 4, 8, 8)

    out = tmp_path / "metrics.json"
    result_eval = CliRunner().invoke(
        cli, ["eval", str(run), "-n", "12", "--out", str(out), "--no-progress"]
    )
    assert result_eval.exit_code == 0, result_eval.output
    report = EvalReport.model_validate_json(out.read_text())
    assert report.metrics["fd"] > 0
    assert report.reference is not None
    assert report.reference["spec"] == str(images.resolve())
    samples = Path(report.sampling.samples_dir)
    assert Image.open(samples / "sample-000000.png").size == (16, 16)
    manifest = json.loads((samples / "samples.json").read_text())
    assert manifest["num"] == 12
