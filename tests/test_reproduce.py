"""``ant reproduce``: known-answer aggregation, variants and plans, and a tiny sweep end to end."""

from __future__ import annotations

import doctest
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import ant.cli.reproduce as commands
import ant.experiments.aggregate as aggregate
import ant.experiments.report as report
import ant.experiments.sweep as sweep
import ant.experiments.variants as variants
from ant.cli import cli
from ant.core.checkpoint import checkpoint_path, list_checkpoints
from ant.core.errors import AntError
from ant.experiments.aggregate import (
    eval_curve,
    eval_metrics,
    first_reach,
    flattened,
    flattened_at,
    relative_change,
    seconds_per_step,
    seed_curve,
    summarize,
)
from ant.experiments.plan import (
    ARCHIVE_FILE,
    EvalSettings,
    SweepConfig,
    make_plan,
    recipe_differences,
    resume_step,
    run_state,
)
from ant.experiments.report import Flattening, build_results, markdown
from ant.experiments.variants import CATALOGUE, PRESETS, Variant, parse_variants
from ant.recipe import dump_recipe

from .eval_helpers import use_session_cache

# --- pure aggregation, known answers ---------------------------------------------------------


@pytest.mark.parametrize("module", [aggregate, variants, sweep, commands, report])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_distance_curves_spanning_five_times_get_a_log_axis() -> None:
    assert report.y_scale("fd", [5.0 * 20.0, 20.0]) == "log"
    assert report.y_scale("fid", [99.0, 20.0]) == "linear"
    assert report.y_scale("kid", [0.5, -0.001]) == "linear", "a log axis cannot show <= 0"
    assert report.y_scale("fd", []) == "linear"
    assert report.y_scale("precision", [0.01, 0.9]) == "linear", "higher-is-better stays linear"


def test_summarize_mean_and_sample_std() -> None:
    s = summarize([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert s.mean == 5.0 and s.n == 8 and (s.minimum, s.maximum) == (2.0, 9.0)
    assert s.std == pytest.approx(math.sqrt(32 / 7))  # n - 1 in the denominator
    assert summarize([3.5]).std is None
    with pytest.raises(ValueError):
        summarize([])


def test_eval_curve_reads_eval_records_only() -> None:
    records = [
        {"step": 1, "loss": 1.0},
        {"step": 2, "eval/fd": 30.0, "eval/accuracy": 0.5, "eval/seconds": 4.0},
        {"step": 4, "eval/fd": float("nan")},
        {"eval/fd": 1.0},  # no step
        {"step": 6, "eval/fd": 20.0},
        {"step": 2, "eval/fd": 29.0},  # a repaired record appended later wins
    ]
    assert eval_curve(records, "fd") == {2: 29.0, 6: 20.0}
    assert list(eval_curve(records, "fd")) == [2, 6]
    assert eval_curve(records, "accuracy") == {2: 0.5}
    assert eval_metrics(records) == ["fd", "accuracy"]  # eval/seconds is no metric


def test_seed_curve_averages_the_steps_every_seed_has() -> None:
    curve = seed_curve([{10: 4.0, 20: 2.0, 30: 1.0}, {10: 6.0, 20: 4.0}, {10: 5.0, 20: 3.0}])
    assert curve.steps == [10, 20]
    assert curve.mean == [5.0, 3.0]
    assert [p.std for p in curve.points] == [1.0, 1.0]
    assert [(p.minimum, p.maximum) for p in curve.points] == [(4.0, 6.0), (2.0, 4.0)]
    assert seed_curve([]).steps == []


def test_paired_comparison_counts_seeds_where_the_variant_is_better() -> None:
    vanilla = {0: 30.0, 1: 25.0, 2: 28.0}
    found = aggregate.paired({0: 20.0, 1: 25.0, 2: 29.0}, vanilla)
    assert found is not None
    assert found.seeds == [0, 1, 2] and found.better == 1, "a tie (seed 1) is not better"
    assert found.differences == [-10.0, 0.0, 1.0]
    assert found.mean_difference == pytest.approx(-3.0)
    higher = aggregate.paired({0: 0.9, 1: 0.7}, {0: 0.8, 1: 0.8}, lower_is_better=False)
    assert higher is not None and higher.better == 1
    assert aggregate.paired({3: 1.0}, vanilla) is None


def test_first_reach() -> None:
    steps, fd = [100, 200, 300, 400], [50.0, 30.0, 21.0, 19.0]
    assert first_reach(steps, fd, 21.0) == 300  # reaching the target exactly counts
    assert first_reach(steps, fd, 10.0) is None
    accuracy = [0.2, 0.6, 0.5, 0.9]
    assert first_reach(steps, accuracy, 0.55, lower_is_better=False) == 200


def test_flattening_criterion() -> None:
    steps = [100, 200, 300, 400, 500, 600, 700, 800]
    fd = [100.0, 60.0, 40.0, 30.0, 25.0, 22.0, 21.0, 20.5]
    # last 25%: steps >= 600 -> 22.0 ... 20.5: |22 - 20.5| / 20.5 = 0.0732
    assert relative_change(steps, fd, 0.25) == pytest.approx(1.5 / 20.5)
    assert flattened(steps, fd, 0.25, 0.05) is False
    assert flattened(steps, fd, 0.25, 0.10) is True
    # last 50%: steps >= 400 -> 30.0 ... 20.5
    assert relative_change(steps, fd, 0.5) == pytest.approx(9.5 / 20.5)
    # not flat at the end: no budget, although the cut at 700 (22, 21: 1/21 < 0.05) was flat
    assert flattened_at(steps, fd, 0.25, 0.05) is None
    assert flattened_at(steps, fd, 0.25, 0.01) is None
    # tolerance 10%: flat from the cut at 700 on (600 -> 500, 600: 25, 22, 14%, is not)
    assert flattened_at(steps, fd, 0.25, 0.10) == 700
    # a false plateau at 300-400 (40, 39.8) that the curve leaves again does not count
    plateau = [100.0, 60.0, 40.0, 39.8, 30.0, 24.0, 23.5, 23.2]
    assert flattened(steps[:4], plateau[:4], 0.25, 0.05) is True
    assert flattened_at(steps, plateau, 0.25, 0.05) == 700
    assert relative_change([100], [5.0], 0.25) is None  # one point: undefined
    assert flattened([100, 200], [5.0, 4.0], 0.25, 0.05) is None  # window holds one point
    with pytest.raises(ValueError):
        relative_change(steps, fd, 0.0)


def test_seconds_per_step_is_the_median_of_logged_rates() -> None:
    records = [
        {"step": 25, "samples_per_s": 200.0},  # 0.5 s/step at batch 100
        {"step": 50, "samples_per_s": 10.0},  # an interval with an evaluation: 10 s/step
        {"step": 50, "eval/fd": 3.0},
        {"step": 75, "samples_per_s": 100.0},  # 1 s/step
    ]
    assert seconds_per_step(records, 100) == 1.0
    assert seconds_per_step([{"step": 1}], 100) is None


# --- variants and plans -----------------------------------------------------------------------

TINY = """
model: {{name: DiT-Micro/2, input_size: 8, in_channels: 1, num_classes: 10}}
diffusion: {{timesteps: 100, schedule: cosine}}
data: {{shards: {shards}, num_workers: 0, shuffle_buffer: 100}}
clustering: {{objective: timestep, k: 5}}
method: {{name: uw}}
optim: {{lr: 1e-3}}
train: {{steps: 6, global_batch_size: 20, log_every: 1, ckpt_every: 3, ema_decay: 0.5}}
sample: {{num: 2, steps: 4, sampler: ddim}}
"""


@pytest.fixture()
def tiny_recipe(tmp_path: Path, digits_shards: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(shards=digits_shards))
    return path


def config(
    recipe: Path, out: Path, names: str = "vanilla,uw-timestep", **kw: object
) -> SweepConfig:
    options: dict[str, object] = {
        "recipe": str(recipe),
        "variants": parse_variants(names),
        "seeds": [0, 1],
        "steps": 6,
        "evaluation": EvalSettings(every=3, num_samples=20, sampler_steps=4),
        "out": out,
    }
    options.update(kw)
    return SweepConfig(**options)  # type: ignore[arg-type]


def test_presets_expand_to_the_paper_variants() -> None:
    names = [v.name for v in parse_variants("paper-digits")]
    assert names == list(PRESETS["paper-digits"])
    assert names == [
        "vanilla",
        "minsnr",
        "uw-timestep",
        "uw-snr",
        "uw-gradient",
        "pcgrad-timestep",
        "nashmtl-timestep",
    ]
    assert all("clustering.k=5" in CATALOGUE[n] for n in names)
    minsnr = CATALOGUE["minsnr"]
    assert {"method.name=vanilla", "weighting.name=minsnr", "weighting.gamma=5.0"} <= set(minsnr)
    both = parse_variants("vanilla,paper-imagenet,cagrad-snr")
    assert [v.name for v in both] == ["vanilla", "minsnr", "uw-timestep", "cagrad-snr"]
    assert "method.name=cagrad" in both[-1].overrides
    assert "clustering.objective=snr" in both[-1].overrides
    with pytest.raises(AntError, match="unknown variant 'uw-nonsense'"):
        parse_variants("uw-nonsense")


def test_variants_from_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "variants.yaml"
    path.write_text(
        "variants:\n"
        "  vanilla:\n"
        "  uw-k8: {method.name: uw, clustering: {objective: snr, k: 8}}\n"
        "  cagrad: ['method.name=cagrad', 'method.c=0.5']\n"
    )
    found = parse_variants(str(path))
    assert found[0] == Variant("vanilla", CATALOGUE["vanilla"])
    assert found[1].overrides == ("method.name=uw", "clustering.objective=snr", "clustering.k=8")
    assert found[2].overrides == ("method.name=cagrad", "method.c=0.5")
    path.write_text("variants:\n  bad name: {method.name: uw}\n")
    with pytest.raises(AntError, match="variant name 'bad name'"):
        parse_variants(str(path))


def test_plan_runs_every_variant_and_seed_alike(tiny_recipe: Path, tmp_path: Path) -> None:
    plan = make_plan(config(tiny_recipe, tmp_path / "out", extra=("optim.lr=2e-3",)))
    assert [r.name for r in plan.runs] == [
        "vanilla-s0",
        "uw-timestep-s0",
        "vanilla-s1",
        "uw-timestep-s1",
    ]
    for run in plan.runs:
        assert run.directory == tmp_path / "out" / "runs" / run.name
        assert run.recipe.train.seed == run.seed and run.recipe.train.steps == 6
        assert run.recipe.optim.lr == 2e-3
        assert (run.recipe.eval.every, run.recipe.eval.num_samples) == (3, 20)
        assert run.recipe.eval.feature_extractor.startswith("classifier:")
        assert (run.recipe.sample.sampler, run.recipe.sample.steps) == ("ddim", 4)
    assert plan.runs[0].recipe.method.name == "vanilla"
    assert plan.runs[1].recipe.method.name == "uw"


def test_plan_refuses_what_would_make_runs_incomparable(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(AntError, match="not a multiple of --eval-every"):
        make_plan(config(tiny_recipe, out, steps=7))
    with pytest.raises(AntError, match="use --eval-samples"):
        make_plan(config(tiny_recipe, out, extra=("eval.num_samples=5",)))
    odd = [Variant("odd", ("method.name=uw", "sample.steps=50"))]
    with pytest.raises(AntError, match="same for every variant"):
        make_plan(config(tiny_recipe, out, variants=odd))
    with pytest.raises(AntError, match=r"optim\.lrr: unknown key"):
        make_plan(config(tiny_recipe, out, extra=("optim.lrr=1",)))


def test_gradient_variant_needs_an_affinity_matrix(
    tiny_recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    names = "vanilla,uw-gradient"
    plan = make_plan(config(tiny_recipe, tmp_path / "out", names))
    assert "ant analyze affinity" in plan.skipped["uw-gradient"]
    assert {r.variant for r in plan.runs} == {"vanilla"}
    matrix = Path("affinity.npy")
    np.save(matrix, np.eye(10, dtype=np.float32))
    plan = make_plan(config(tiny_recipe, tmp_path / "out", names, affinity=matrix))
    assert not plan.skipped
    gradient = plan.of("uw-gradient")[0]
    assert gradient.recipe.clustering.affinity == "affinity.npy", "kept relative: portable"
    gradient.directory.mkdir(parents=True)
    absolute = make_plan(config(tiny_recipe, tmp_path / "out", names, affinity=matrix.resolve()))
    written = dump_recipe(absolute.of("uw-gradient")[0].recipe)
    (gradient.directory / "recipe.yaml").write_text(written)
    assert recipe_differences(gradient) == [], "the same file, named absolute or relative"
    np.save("other.npy", np.eye(10, dtype=np.float32))
    other = make_plan(config(tiny_recipe, tmp_path / "out", names, affinity=Path("other.npy")))
    assert recipe_differences(other.of("uw-gradient")[0]) == ["clustering.affinity"]
    assert plan.of("vanilla")[0].recipe.clustering.affinity is None
    with pytest.raises(AntError, match="file not found"):
        make_plan(config(tiny_recipe, tmp_path / "out", names, affinity=tmp_path / "no.npy"))


def test_archived_runs_count_as_done_for_the_eta(tiny_recipe: Path, tmp_path: Path) -> None:
    plan = make_plan(config(tiny_recipe, tmp_path / "out"))
    archived, partial = plan.runs[0], plan.runs[1]
    archived.directory.mkdir(parents=True)
    (archived.directory / ARCHIVE_FILE).write_text('{"step": 6}')
    checkpoint_path(partial.directory, 3).parent.mkdir(parents=True)
    checkpoint_path(partial.directory, 3).write_bytes(b"")
    assert run_state(archived) == "finished" and resume_step(archived) == 6
    assert resume_step(partial) == 3
    assert sweep.Sweep(plan, show=False)._remaining() == 3 + 6 + 6, "archived: nothing left"


def _fake_run(directory: Path, fd: dict[int, float], accuracy: dict[int, float]) -> None:
    """A run directory with eval records and empty checkpoint files at the eval steps."""
    directory.mkdir(parents=True)
    lines = [{"step": 1, "loss": 1.0, "samples_per_s": 40.0}]
    for step in fd:
        lines.append({"step": step, "eval/fd": fd[step], "eval/accuracy": accuracy[step]})
        checkpoint_path(directory, step).parent.mkdir(exist_ok=True)
        checkpoint_path(directory, step).write_bytes(b"")
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_results_of_synthetic_runs(tiny_recipe: Path, tmp_path: Path) -> None:
    plan = make_plan(
        config(tiny_recipe, tmp_path / "out", seeds=[0, 1], evaluation=EvalSettings(2, 20))
    )
    runs = {r.name: r.directory for r in plan.runs}
    _fake_run(runs["vanilla-s0"], {2: 50.0, 4: 30.0, 6: 20.0}, {2: 0.1, 4: 0.5, 6: 0.7})
    _fake_run(runs["vanilla-s1"], {2: 54.0, 4: 34.0, 6: 24.0}, {2: 0.2, 4: 0.5, 6: 0.9})
    _fake_run(runs["uw-timestep-s0"], {2: 40.0, 4: 21.0, 6: 15.0}, {2: 0.3, 4: 0.6, 6: 0.8})
    _fake_run(runs["uw-timestep-s1"], {2: 44.0, 4: 23.0}, {2: 0.3, 4: 0.6})  # unfinished
    checkpoint_path(runs["uw-timestep-s1"], 6).unlink(missing_ok=True)
    assert run_state(plan.runs[3]) == "partial"

    results = build_results(plan, {}, flattening=Flattening(window=0.5, tolerance=0.5))
    assert results["primary_metric"] == "fd" and results["reference_final"] == 22.0
    vanilla, uw = results["variants"]
    assert vanilla["num_seeds"] == 2 and vanilla["seeds"] == [0, 1]
    assert vanilla["final"]["fd"]["mean"] == 22.0
    assert vanilla["final"]["fd"]["std"] == pytest.approx(math.sqrt(8))
    assert vanilla["final"]["accuracy"]["mean"] == pytest.approx(0.8)
    assert vanilla["curves"]["fd"]["steps"] == [2, 4, 6]
    assert vanilla["curves"]["fd"]["mean"] == [52.0, 32.0, 22.0]
    assert vanilla["reaches_reference_at"] == 6
    # window [3, 6]: 32 -> 22, change 10 / 22 = 0.4545 < 0.5
    assert vanilla["relative_change"] == pytest.approx(10 / 22, rel=1e-5)
    assert vanilla["flattened"] is True and vanilla["flattened_at"] == 6
    assert vanilla["seconds_per_step"] == 0.5  # batch 20 at 40 samples/s
    assert uw["num_seeds"] == 1 and uw["pending_seeds"] == [1]
    assert uw["final"]["fd"] == {
        "mean": 15.0,
        "std": None,
        "min": 15.0,
        "max": 15.0,
        "values": [15.0],
    }
    assert uw["reaches_reference_at"] == 4  # 21 <= 22 at step 4
    assert uw["relative_change"] == pytest.approx(6 / 15, rel=1e-5)
    # paired with vanilla on seed 0 only, the one both finished: 15 - 20
    assert uw["vs_reference"] == {
        "seeds": [0],
        "better": 1,
        "differences": [-5.0],
        "mean_difference": -5.0,
    }
    assert vanilla["vs_reference"] is None
    row = next(line for line in markdown(results, []).splitlines() if line.startswith("| uw-"))
    assert "| 1/1 (-5) |" in row


# --- the sweep end to end ---------------------------------------------------------------------


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, ["reproduce", *args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def swept(
    tmp_path_factory: pytest.TempPathFactory, digits_shards: Path
) -> Iterator[tuple[list[str], Path, float]]:
    """Two variants x two seeds of a 6-step DiT-Micro, evaluated at steps 3 and 6."""
    root = tmp_path_factory.mktemp("reproduce")
    recipe = root / "tiny.yaml"
    recipe.write_text(TINY.format(shards=digits_shards))
    out = root / "out"
    args = [
        "--recipe",
        str(recipe),
        "--variants",
        "vanilla,uw-timestep",
        "--seeds",
        "0,1",
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--eval-samples",
        "20",
        "--sampler-steps",
        "4",
        "--device",
        "cpu",
        "--jobs",
        "2",
        "--no-progress",
        "--out",
        str(out),
    ]
    with pytest.MonkeyPatch.context() as patch:
        use_session_cache(tmp_path_factory, patch)
        start = time.perf_counter()
        result = invoke(*args)
        seconds = time.perf_counter() - start
        assert result.exit_code == 0, result.output
        yield args, out, seconds


def mtimes(out: Path) -> dict[str, float]:
    return {
        str(path): path.stat().st_mtime
        for path in (out / "runs").rglob("*")
        if path.is_file() and path.suffix in (".pt", ".jsonl", ".yaml")
    }


def test_sweep_writes_results_table_and_curves(swept: tuple[list[str], Path, float]) -> None:
    _, out, seconds = swept
    results = json.loads((out / "results.json").read_text())
    assert results["format"] == "ant-reproduce/1"
    assert results["steps"] == 6 and results["seeds"] == [0, 1]
    assert results["primary_metric"] == "fd"
    assert {"fd", "accuracy"} <= set(results["metrics"])
    assert results["evaluation"]["num_samples"] == 20
    assert results["evaluation"]["sampler"] == "ddim"
    assert results["evaluation"]["feature_extractor"].startswith("classifier:")
    assert [v["name"] for v in results["variants"]] == ["vanilla", "uw-timestep"]
    for variant in results["variants"]:
        assert variant["num_seeds"] == 2 and variant["seeds"] == [0, 1]
        for metric in ("fd", "accuracy"):
            final = variant["final"][metric]
            assert len(final["values"]) == 2 and final["std"] is not None
            assert final["mean"] == pytest.approx(sum(final["values"]) / 2, rel=1e-4)
            assert variant["curves"][metric]["steps"] == [3, 6]
        assert variant["final"]["fd"]["mean"] > 0
        assert variant["seconds_per_step"] > 0 and variant["eval_seconds"] > 0
        assert variant["wall_seconds"] > 0
        assert "reaches_reference_at" in variant and "flattened" in variant
        assert all(run["state"] == "finished" for run in variant["runs"])
    vanilla = results["variants"][0]
    assert results["reference_final"] == vanilla["final"]["fd"]["mean"]
    assert vanilla["reaches_reference_at"] in (3, 6)
    for name in ("curves_fd.png", "curves_accuracy.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.md").read_text()
    assert "| vanilla | 2 |" in table and "| uw-timestep | 2 |" in table
    assert "![curves_fd](curves_fd.png)" in table
    for run in ("vanilla-s0", "vanilla-s1", "uw-timestep-s0", "uw-timestep-s1"):
        assert [s for s, _ in list_checkpoints(out / "runs" / run)] == [3, 6]
        assert "ant train" in (out / "logs" / f"{run}.log").read_text()
    print(f"sweep of 4 runs: {seconds:.1f} s")


def test_rerun_skips_finished_runs(swept: tuple[list[str], Path, float]) -> None:
    args, out, _ = swept
    before = mtimes(out)
    first = json.loads((out / "results.json").read_text())
    start = time.perf_counter()
    result = invoke(*args)
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    assert result.output.count("finished earlier, skipped") == 4
    assert "0 trained, 4 already finished" in result.output
    assert mtimes(out) == before
    assert json.loads((out / "results.json").read_text())["variants"] == first["variants"]
    assert seconds < 20, seconds
    changed = [*args, "--eval-samples", "30"]
    refused = invoke(*changed)
    assert refused.exit_code == 2
    assert "trained with other settings (eval.num_samples)" in refused.output


def test_rerun_resumes_an_interrupted_run_and_repairs_lost_evaluations(
    swept: tuple[list[str], Path, float],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_session_cache(tmp_path_factory, monkeypatch)
    args, out, _ = swept
    first = {v["name"]: v for v in json.loads((out / "results.json").read_text())["variants"]}
    interrupted = out / "runs" / "uw-timestep-s1"
    checkpoint_path(interrupted, 6).unlink()  # killed between its checkpoints at 3 and 6
    lost = out / "runs" / "vanilla-s0" / "metrics.jsonl"  # killed in its final evaluation
    kept = [
        line
        for line in lost.read_text().splitlines()
        if '"eval/' not in line or '"step": 3' in line
    ]
    lost.write_text("\n".join(kept) + "\n")
    before = mtimes(out)

    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "uw-timestep-s1: resuming at step 3" in result.output
    assert "vanilla-s0: evaluated the checkpoints of steps [6]" in result.output
    assert "1 trained, 3 already finished" in result.output
    after = mtimes(out)
    changed = {path for path in after if after[path] != before.get(path)}
    assert all("uw-timestep-s1" in path or path == str(lost) for path in changed), changed
    again = {v["name"]: v for v in json.loads((out / "results.json").read_text())["variants"]}
    for name in ("vanilla", "uw-timestep"):
        for metric in ("fd", "accuracy"):
            assert again[name]["final"][metric]["values"] == pytest.approx(
                first[name]["final"][metric]["values"], rel=1e-4
            )
    state = json.loads((out / "sweep.json").read_text())["runs"]
    assert state["uw-timestep-s1"]["attempts"] == 2
    assert state["vanilla-s0"]["repaired_evals"] == [6]


def with_options(args: list[str], values: dict[str, str]) -> list[str]:
    """``args`` with the values of the options named in ``values`` replaced."""
    out = list(args)
    for option, value in values.items():
        out[out.index(option) + 1] = value
    return out


def test_an_archive_keeps_the_results_and_continues_with_more_seeds(
    swept: tuple[list[str], Path, float],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_session_cache(tmp_path_factory, monkeypatch)
    args, out, _ = swept
    archive = tmp_path_factory.mktemp("archive") / "digits"
    result = invoke(*args, "--report-only", "--archive", str(archive))
    assert result.exit_code == 0, result.output
    assert "archived 4 finished runs" in result.output
    assert not list(archive.rglob("*.pt"))
    assert {p.name for p in (archive / "runs" / "vanilla-s0").iterdir()} == {
        "recipe.yaml",
        "metrics.jsonl",
        "clusters.json",
        "archived.json",
    }
    original = json.loads((out / "results.json").read_text())["variants"]
    kept = json.loads((archive / "results.json").read_text())["variants"]
    for old, new in zip(original, kept, strict=True):
        assert new["final"] == old["final"] and new["num_seeds"] == 2
    assert (archive / "curves_fd.png").is_file() and (archive / "sweep.json").is_file()

    at_archive = with_options(
        args, {"--out": str(archive), "--seeds": "0,1,2", "--variants": "vanilla"}
    )
    more = invoke(*at_archive)
    assert more.exit_code == 0, more.output
    assert "1 trained, 2 already finished" in more.output
    vanilla = json.loads((archive / "results.json").read_text())["variants"][0]
    assert vanilla["seeds"] == [0, 1, 2]
    assert vanilla["final"]["fd"]["values"][:2] == original[0]["final"]["fd"]["values"]

    refused = invoke(*with_options(at_archive, {"--steps": "9"}))
    assert refused.exit_code == 2
    assert "archived at step 6 without checkpoints" in refused.output


def test_a_failing_run_does_not_stop_the_sweep(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # A launcher that fails at once stands in for a crashing trainer.
    crash = "sh -c 'echo boom >&2; exit 3' sh"
    args = ["--recipe", str(tiny_recipe), "--variants", "vanilla,uw-timestep", "--seeds", "0"]
    args += ["--steps", "6", "--eval-every", "3", "--out", str(out), "--no-progress"]
    result = invoke(*args, "--launcher", crash)
    assert result.exit_code == 1, result.output
    assert result.output.count("FAILED (exit code 3)") == 2 and "boom" in result.output
    assert "0 trained, 0 already finished, 2 failed" in result.output
    results = json.loads((out / "results.json").read_text())
    assert [v["failed_seeds"] for v in results["variants"]] == [[0], [0]]
    assert [v["num_seeds"] for v in results["variants"]] == [0, 0]
    assert "boom" in (out / "logs" / "vanilla-s0.log").read_text()
    state = json.loads((out / "sweep.json").read_text())["runs"]
    assert state["vanilla-s0"]["returncode"] == 3


def test_a_signal_stops_the_sweep_after_the_running_trainer(
    tiny_recipe: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # The stand-in trainer sends SIGTERM to the sweep (its parent), as a scheduler would; the
    # sweep passes it on to the trainer and starts no further run.
    stop = "sh -c 'kill -TERM $PPID; sleep 30' sh"
    args = ["--recipe", str(tiny_recipe), "--variants", "vanilla,uw-timestep", "--seeds", "0"]
    args += ["--steps", "6", "--eval-every", "3", "--out", str(out), "--no-progress"]
    start = time.perf_counter()
    result = invoke(*args, "--launcher", stop)
    assert time.perf_counter() - start < 20
    assert result.exit_code == 143, result.output
    assert result.output.count(": starting") == 1
    assert "stopped at step 0; rerun the same command to resume" in result.output
    assert "interrupted" in result.output


def test_key_value_arguments_override_every_run_as_set_does(
    tiny_recipe: Path, tmp_path: Path
) -> None:
    common = ["--recipe", str(tiny_recipe), "--variants", "vanilla,uw-timestep", "--seeds", "0"]
    common += ["--steps", "6", "--out", str(tmp_path / "out"), "--dry-run"]
    positional = invoke(*common, "optim.lr=0.0005", "model.name=DiT-Micro/4")
    spelled = invoke(*common, "--set", "optim.lr=0.0005", "--set", "model.name=DiT-Micro/4")
    assert positional.exit_code == 0, positional.output
    assert positional.output == spelled.output
    commands = [line for line in positional.output.splitlines() if " train " in line]
    assert len(commands) == 2
    assert all("optim.lr=0.0005" in line and "DiT-Micro/4" in line for line in commands)
    bad = CliRunner().invoke(cli, ["reproduce", *common, "optim.lr=fast"])
    assert bad.exit_code == 2 and "optim.lr" in bad.output
