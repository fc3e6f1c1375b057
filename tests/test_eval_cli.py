"""``ant eval`` end to end on a tiny checkpoint: metrics file, resume, caching, weights, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from ant.cli import cli
from ant.evaluation.report import EvalReport
from ant.sampling.generate import BatchSampler

from .eval_helpers import (
    digits_uint8,
    make_run,
    random_inception_weights,
    use_session_cache,
    write_pngs,
)
from .helpers import assert_one_line_error, run_ant


@pytest.fixture(autouse=True)
def session_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    return use_session_cache(tmp_path_factory, monkeypatch)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, digits_shards: Path) -> Path:
    return make_run(tmp_path_factory.mktemp("eval"), digits_shards)[0]


def ant_eval(*args: object) -> Result:
    return CliRunner().invoke(cli, ["eval", *(str(a) for a in args), "--no-progress"])


def report_of(path: Path) -> EvalReport:
    return EvalReport.model_validate_json(path.read_text())


def test_eval_with_the_classifier_writes_a_complete_metrics_file(run: Path, tmp_path: Path) -> None:
    out, npz = tmp_path / "metrics.json", tmp_path / "samples.npz"
    latest = run / "checkpoints" / "latest.pt"
    result = ant_eval(latest, "--out", out, "--npz", npz, "-n", 30, "--batch-size", 16)
    assert result.exit_code == 0, result.output
    for name in ("fd", "accuracy", "coverage", "class_entropy"):
        assert name in result.output
    report = report_of(out)
    assert report.format == "ant-eval/1"
    assert report.step == 7 and report.weights == "EMA"
    assert report.checkpoint.endswith("step-0000007.pt")
    assert set(report.metrics) == {"fd", "accuracy", "coverage", "class_entropy"}
    assert report.metrics["fd"] > 0 and 0 <= report.metrics["accuracy"] <= 1
    assert report.sampling.num_samples == 30 and report.sampling.written == 30
    assert (report.sampling.sampler, report.sampling.steps) == ("ddpm", 5)
    assert report.feature_extractor.startswith("classifier:")
    (details,) = report.extractors.values()
    assert details["held_out_accuracy"] > 0.9
    assert report.reference is not None and report.reference["count"] == 1797
    raw = json.loads(out.read_text())
    assert {"format", "checkpoint", "metrics", "sampling", "reference", "seconds"} <= set(raw)

    samples = Path(report.sampling.samples_dir)
    assert samples == run / "eval" / "step-0000007-ddpm5-cfg1-seed0" / "samples"
    assert len(list(samples.glob("sample-*.png"))) == 30
    manifest = json.loads((samples / "samples.json").read_text())
    assert manifest["labels"] == [i % 10 for i in range(30)]
    with np.load(npz) as arrays:
        assert arrays["arr_0"].shape == (30, 8, 8, 3) and arrays["arr_0"].dtype == np.uint8
        assert arrays["arr_1"].tolist() == manifest["labels"]


def test_interrupted_sampling_resumes_and_draws_the_same_samples(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = BatchSampler.__call__
    calls: list[int] = []

    def interrupted(self: BatchSampler, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    resumed, fresh = tmp_path / "resumed", tmp_path / "fresh"
    common = ("-n", 40, "--batch-size", 8, "--metrics", "fd")
    with monkeypatch.context() as patch:
        patch.setattr(BatchSampler, "__call__", interrupted)
        stopped = ant_eval(run, "--samples-dir", resumed, *common)
    assert stopped.exit_code != 0
    assert len(list(resumed.glob("sample-*.png"))) == 16
    again = ant_eval(run, "--samples-dir", resumed, "--out", tmp_path / "r.json", *common)
    assert again.exit_code == 0, again.output
    report = report_of(tmp_path / "r.json")
    assert report.sampling.written == 24 and report.sampling.num_samples == 40
    assert len(list(resumed.glob("sample-*.png"))) == 40
    whole = ant_eval(run, "--samples-dir", fresh, "--out", tmp_path / "f.json", *common)
    assert whole.exit_code == 0, whole.output
    for index in range(40):
        name = f"sample-{index:06d}.png"
        assert (resumed / name).read_bytes() == (fresh / name).read_bytes(), name
    assert report_of(tmp_path / "f.json").metrics == report.metrics


def test_other_settings_do_not_mix_with_existing_samples(run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    assert ant_eval(run, "--samples-dir", folder, "-n", 4, "--metrics", "fd").exit_code == 0
    other = ant_eval(run, "--samples-dir", folder, "-n", 4, "--seed", 3, "--metrics", "fd")
    assert other.exit_code == 2
    assert_one_line_error(other.stderr, "seed=0", "not 3", "--samples-dir")


def test_second_eval_reads_the_cached_reference_statistics(run: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert ant_eval(run, "-n", 10, "--metrics", "fd", "--out", first).exit_code == 0
    statistics = Path(str(report_of(first).reference["statistics"]))  # type: ignore[index]
    stamp = statistics.stat().st_mtime_ns
    result = ant_eval(run, "-n", 10, "--metrics", "fd", "--out", second)
    assert result.exit_code == 0, result.output
    assert "cached statistics" in result.output
    reference = report_of(second).reference
    assert reference is not None and reference["cached"] is True
    assert statistics.stat().st_mtime_ns == stamp


def test_missing_inception_weights_stop_before_sampling(
    tmp_path: Path, digits_shards: Path
) -> None:
    run, _ = make_run(tmp_path, digits_shards)
    result = run_ant(
        "eval",
        str(run),
        "--feature-extractor",
        "inception",
        "--metrics",
        "fid",
        env={"TORCH_HOME": str(tmp_path / "torch"), "ANT_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 2
    assert_one_line_error(
        result.stderr, "Inception-v3 weights not found", "https://github.com/toshas", "--weights"
    )
    assert not (run / "eval").exists(), "nothing may be sampled before the weights are found"
    given = run_ant(
        "eval", str(run), "--feature-extractor", "inception", "--weights", str(tmp_path / "no.pth")
    )
    assert given.returncode == 2
    assert_one_line_error(given.stderr, "no.pth does not exist")


def test_inception_metrics_with_local_weights(
    run: Path, tmp_path: Path, digits_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)
    weights = random_inception_weights(tmp_path / "inception.pth")
    reference = write_pngs(digits_uint8(digits_shards, 16)[0], tmp_path / "reference")
    out = tmp_path / "metrics.json"
    result = ant_eval(
        run,
        "--feature-extractor",
        "inception",
        "--weights",
        weights,
        "--ref",
        reference,
        "--metrics",
        "fid,isc,kid,prc",
        "-n",
        12,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    metrics = report_of(out).metrics
    assert set(metrics) == {"fid", "isc", "isc_std", "kid", "kid_std", "precision", "recall"}
    assert metrics["fid"] > 0


def test_key_value_overrides_change_the_stored_sample_and_eval_sections(
    run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "metrics.json"
    result = ant_eval(run, "sample.cfg_scale=2", "eval.num_samples=10", "--out", out)
    assert result.exit_code == 0, result.output
    report = report_of(out)
    assert report.sampling.num_samples == 10 and report.sampling.cfg_scale == 2
    refused = ant_eval(run, "model.num_classes=3")
    assert refused.exit_code == 2
    assert "a trained model's model cannot change" in refused.output
    bad = ant_eval(run, "sample.steps=1")
    assert bad.exit_code == 2 and "sample.steps" in bad.output
