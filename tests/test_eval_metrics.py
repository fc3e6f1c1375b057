"""Metrics on real features: FD/FID of a set with itself, noise, names, reference statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from ant.core.errors import AntError
from ant.evaluation import EvalResult, Evaluator
from ant.evaluation import references as references_module
from ant.evaluation.images import tensor_images
from ant.evaluation.references import _Accumulator, frechet_statistics

from .eval_helpers import (
    digits_uint8,
    noisy,
    random_inception_weights,
    use_session_cache,
    write_pngs,
)


@pytest.fixture(autouse=True)
def session_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    return use_session_cache(tmp_path_factory, monkeypatch)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_inception_weights(tmp_path_factory.mktemp("weights") / "inception.pth")


@pytest.fixture
def small_inception(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inception at its smallest input (75 px, not 299): the same network, 16x cheaper on a CPU."""
    monkeypatch.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory, digits_shards: Path) -> Path:
    images, _ = digits_uint8(digits_shards, 24)
    return write_pngs(images, tmp_path_factory.mktemp("ref") / "digits")


def classifier_evaluator(shards: Path, metrics: list[str], num_classes: int = 10) -> Evaluator:
    return Evaluator(
        metrics=metrics,
        feature_extractor=f"classifier:{shards}",
        reference=str(shards),
        num_classes=num_classes,
        batch_size=256,
    )


def test_fd_of_the_data_with_itself_is_zero_and_grows_with_noise(digits_shards: Path) -> None:
    images, labels = digits_uint8(digits_shards)
    evaluator = classifier_evaluator(digits_shards, ["fd"])
    values = [
        evaluator.evaluate(tensor_images(noisy(images, sigma), "digits"), labels).metrics
        for sigma in (0.0, 20.0, 60.0)
    ]
    clean, light, heavy = (v["fd"] for v in values)
    assert abs(clean) < 1e-6 * max(1.0, heavy)
    assert 0 < light < heavy
    assert values[0]["accuracy"] > 0.95 and values[0]["coverage"] == 1.0
    assert values[0]["class_entropy"] == pytest.approx(1.0, abs=0.01)
    assert values[2]["accuracy"] < values[0]["accuracy"]
    assert "fid" not in values[0], "the classifier's Fréchet distance is FD, never FID"


@pytest.mark.usefixtures("small_inception")
def test_fid_on_inception_features_is_zero_for_the_same_set_and_grows_with_noise(
    inception_weights: Path, small_folder: Path, digits_shards: Path
) -> None:
    images, _ = digits_uint8(digits_shards, 24)
    evaluator = Evaluator(
        metrics=["fid", "kid", "prc", "isc"],
        feature_extractor="inception",
        reference=str(small_folder),
        weights={"inception": inception_weights},
        batch_size=24,
    )
    clean = evaluator.evaluate(tensor_images(images, "same")).metrics
    noisy_values = evaluator.evaluate(tensor_images(noisy(images, 60.0), "noisy")).metrics
    assert set(clean) == {"fid", "kid", "kid_std", "precision", "recall", "isc", "isc_std"}
    assert abs(clean["fid"]) < 1e-3 * noisy_values["fid"]
    assert noisy_values["fid"] > 0
    assert clean["precision"] == 1.0 and clean["recall"] == 1.0
    assert all(math.isfinite(v) for v in noisy_values.values())


def test_metric_and_extractor_names_give_one_line_errors(digits_shards: Path) -> None:
    with pytest.raises(AntError, match="unknown metric 'fdi': did you mean 'fd'"):
        classifier_evaluator(digits_shards, ["fdi"])
    with pytest.raises(AntError, match="is a feature extractor, not a metric"):
        classifier_evaluator(digits_shards, ["inception"])
    with pytest.raises(AntError, match="isc needs the inception feature extractor"):
        classifier_evaluator(digits_shards, ["isc"])
    with pytest.raises(AntError, match="needs a class-conditional model"):
        classifier_evaluator(digits_shards, ["accuracy"], num_classes=0)
    with pytest.raises(AntError, match="needs the real data"):
        Evaluator(metrics=["fd"], feature_extractor="classifier", reference=str(digits_shards))
    with pytest.raises(AntError, match="reference 'nowhere' not found"):
        Evaluator(
            metrics=["fd"], feature_extractor=f"classifier:{digits_shards}", reference="nowhere"
        )


def test_missing_inception_weights_say_where_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(AntError) as info:
        Evaluator(metrics=["fid"], feature_extractor="inception", reference=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    assert "weights-inception-2015-12-05" in message and "https://github.com/toshas" in message
    assert "--weights" in message and str(tmp_path / "torch") in message


def test_reference_statistics_are_computed_once(
    digits_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = references_module.iter_features

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(references_module, "iter_features", counting)
    images, labels = digits_uint8(digits_shards, 100)
    folder = write_pngs(images[:60], tmp_path / "reference")

    def evaluate() -> EvalResult:
        evaluator = Evaluator(
            metrics=["fd", "kid"],
            feature_extractor=f"classifier:{digits_shards}",
            reference=str(folder),
            num_classes=10,
        )
        return evaluator.evaluate(tensor_images(images, "a"), labels)

    result = evaluate()
    reference = result.reference
    assert reference is not None and reference["cached"] is False and calls == [1]
    cache_file = Path(reference["statistics"])
    stamp = cache_file.stat().st_mtime_ns
    second = evaluate()
    assert second.reference is not None and second.reference["cached"] is True
    assert calls == [1], "the second evaluation must not extract reference features"
    assert cache_file.stat().st_mtime_ns == stamp
    assert second.metrics == pytest.approx(result.metrics)
    assert second.reference["sha256"] == reference["sha256"]
    assert second.reference["count"] == 60

    from_file = Evaluator(
        metrics=["fd"],
        feature_extractor=f"classifier:{digits_shards}",
        reference=str(cache_file),
        num_classes=10,
    ).evaluate(tensor_images(images, "a"), labels)
    assert from_file.metrics["fd"] == pytest.approx(result.metrics["fd"])
    with pytest.raises(AntError, match="statistics only"):
        Evaluator(
            metrics=["prc"],
            feature_extractor=f"classifier:{digits_shards}",
            reference=str(_statistics_only(cache_file)),
        )


def _statistics_only(path: Path) -> Path:
    with np.load(path) as arrays:
        kept = {k: arrays[k] for k in arrays.files if k != "features"}
    target = path.with_name("stats-only.npz")
    np.savez(target, **kept)
    return target


def test_streamed_statistics_match_numpy_and_the_reservoir_keeps_a_fixed_number() -> None:
    rows = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 6)).astype(np.float32)
    accumulator = _Accumulator(keep=100)
    for chunk in np.array_split(rows, 7):
        accumulator.add(chunk)
    mu, sigma = accumulator.statistics()
    np.testing.assert_allclose(mu, rows.astype(np.float64).mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(sigma, np.cov(rows.astype(np.float64), rowvar=False), rtol=1e-8)
    kept = accumulator.rows()
    assert kept.shape == (100, 6)
    assert {tuple(r) for r in kept} <= {tuple(r) for r in rows}
    mu_all, _ = frechet_statistics(torch.from_numpy(rows))
    np.testing.assert_allclose(mu_all, mu)
