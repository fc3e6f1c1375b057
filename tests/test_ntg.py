"""NTG: the timestep router, interval parsing, the sign convention and ``ant analyze ntg``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from ant.cli import cli
from ant.clustering.intervals import Interval
from ant.core.errors import AntError
from ant.diffusion import GaussianDiffusion
from ant.evaluation.ntg import TimestepRouter, negative_transfer_gaps, parse_specific
from ant.sampling.generate import BatchSampler

from .eval_helpers import make_run, use_session_cache


class Recorder(nn.Module):
    """Predicts ``marker`` everywhere and records the timesteps and labels it was called with."""

    in_channels = 1
    out_channels = 1
    input_size = 4
    num_classes = 3
    null_label = 3
    learn_sigma = False

    def __init__(self, marker: float) -> None:
        super().__init__()
        self.marker = marker
        self.timesteps: list[int] = []
        self.labels: list[int] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.timesteps.extend(t.tolist())
        self.labels.extend(y.tolist())
        return torch.full_like(x, self.marker)


def test_router_sends_each_sample_to_the_model_of_its_timestep() -> None:
    shared, early, late = Recorder(0.0), Recorder(1.0), Recorder(2.0)
    router = TimestepRouter(shared, [(Interval(0, 2), early), (Interval(7, 9), late)])
    t = torch.tensor([5, 0, 9, 2, 3, 7, 8])
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    out = router(torch.zeros(7, 1, 4, 4), t, y)
    assert out[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0, 1.0, 0.0, 2.0, 2.0]
    assert sorted(shared.timesteps) == [3, 5] and sorted(early.timesteps) == [0, 2]
    assert sorted(late.timesteps) == [7, 8, 9]
    assert early.labels == [1, 0], "labels travel with their samples"
    assert (router.in_channels, router.num_classes, router.null_label) == (1, 3, 3)


def test_router_inside_a_sampler_uses_the_specific_model_only_on_its_interval() -> None:
    diffusion = GaussianDiffusion.from_schedule("linear", 100)
    shared, specific = Recorder(0.0), Recorder(0.0)
    router = TimestepRouter(shared, [(Interval(30, 59), specific)])
    draw = BatchSampler(router, diffusion, steps=20, cfg_scale=2.0)
    draw(range(3), torch.tensor([0, 1, 2]), seed=0)
    assert specific.timesteps and all(30 <= t <= 59 for t in specific.timesteps)
    assert shared.timesteps and not any(30 <= t <= 59 for t in shared.timesteps)
    assert 3 in specific.labels, "guidance passes the null label through the router"
    assert set(shared.timesteps) | set(specific.timesteps) == set(
        diffusion.respaced(20).timestep_map.tolist()
    )


def test_intervals_and_their_parsing() -> None:
    assert parse_specific("runs/a@0:199") == ("runs/a", Interval(0, 199))
    assert parse_specific("runs/a") == ("runs/a", None)
    assert parse_specific("me@host/run@5:9") == ("me@host/run", Interval(5, 9))
    with pytest.raises(AntError, match="CKPT@a:b"):
        parse_specific("runs/a@0-199")
    with pytest.raises(AntError, match="0 <= a <= b < 100"):
        Interval(50, 100).check(100, "--specific x")
    with pytest.raises(AntError, match="overlap"):
        TimestepRouter(Recorder(0), [(Interval(0, 5), Recorder(1)), (Interval(5, 9), Recorder(2))])


def test_ntg_sign_convention() -> None:
    better, worse = negative_transfer_gaps(
        10.0, [(Interval(0, 9), "a", 7.5), (Interval(10, 19), "b", 12.0)]
    )
    assert better.gap == pytest.approx(-2.5) and better.negative_transfer
    assert worse.gap == pytest.approx(2.0) and not worse.negative_transfer


def test_analyze_ntg_end_to_end(
    tmp_path: Path,
    digits_shards: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_session_cache(tmp_path_factory, monkeypatch)
    shared, _ = make_run(tmp_path, digits_shards, seed=1)
    specific, _ = make_run(tmp_path, digits_shards, seed=2, span=(50, 99))
    out = tmp_path / "ntg"
    result = CliRunner().invoke(
        cli,
        [
            "analyze",
            "ntg",
            "--shared",
            str(shared),
            "--specific",
            f"{specific}@0:49",
            "--specific",
            str(specific),
            "-n",
            "30",
            "sample.steps=4",
            "eval.batch_size=16",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "negative transfer" in result.output
    report = json.loads((out / "ntg.json").read_text())
    assert report["metric"] == "fd"
    assert report["sampling"]["steps"] == 4
    shared_fd = report["shared"]["fd"]
    rows = report["intervals"]
    assert [row["interval"] for row in rows] == [[0, 49], [50, 99]]
    for row in rows:
        assert row["ntg"] == pytest.approx(row["fd"] - shared_fd)
        assert row["negative_transfer"] == (row["ntg"] < 0)
    assert rows[0]["fd"] != rows[1]["fd"]
    with Image.open(out / "ntg.png") as image:
        assert image.format == "PNG"
    assert len(list((out / "samples" / "shared").glob("sample-*.png"))) == 30
