"""Loggers as plugins: TensorBoard, MLflow (a local store) and Weights & Biases (offline) fed
by real digits runs and read back from their own files."""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ant.core.errors import AntError
from ant.core.logbook import read_metrics, scalars
from ant.core.plugins import registry
from ant.core.trackers import WandbLogger
from ant.recipe import load_recipe
from ant.training.loop import fit

from .helpers import assert_one_line_error, run_ant
from .test_training import CPU_CTX, make_recipe

SHORT = ("train.steps=3", "train.ckpt_every=2", "train.sample_every=2", "method.name=vanilla")


def test_the_loggers_are_plugins() -> None:
    assert {"jsonl", "tensorboard", "wandb", "mlflow"} <= set(registry("logger").names())
    result = run_ant("plugins", "--kind", "logger", "--json")
    assert result.returncode == 0, result.stderr
    assert {"jsonl", "mlflow"} <= {entry["name"] for entry in json.loads(result.stdout)}


def test_scalars_flatten_lists_and_the_cosine_matrix() -> None:
    record = {"step": 4, "loss": 0.5, "w": [1, 2], "c": [[1, 0.2], [0.2, 1]], "x": float("nan")}
    assert scalars(record) == {"loss": 0.5, "w/0": 1.0, "w/1": 2.0, "c/0_1": 0.2}


def test_tensorboard_holds_the_scalars_and_the_sample_grids(
    tmp_path: Path, digits_shards: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    fit(make_recipe(tmp_path, digits_shards, *SHORT), run, CPU_CTX, show=False)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]
    assert [e.step for e in events.Images("samples")] == [2, 3]


def test_mlflow_gets_metrics_recipe_grids_and_resumes_the_same_run(
    tmp_path: Path, digits_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "runs" / "digits"
    recipe = make_recipe(tmp_path, digits_shards, *SHORT, "train.loggers=[jsonl,mlflow]")
    fit(recipe, run, CPU_CTX, show=False)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow' / 'mlflow.db'}")
    run_id = (run / "mlflow-run-id").read_text().strip()
    found = client.get_run(run_id)
    assert found.data.params["method.name"] == "vanilla"
    assert found.data.params["train.steps"] == "3"
    assert found.data.tags["ant.run_dir"] == str(run.resolve())
    assert found.info.status == "FINISHED"
    losses = client.get_metric_history(run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3]
    assert [m.value for m in losses] == pytest.approx([r["loss"] for r in read_metrics(run)])
    grids = {a.path for a in client.list_artifacts(run_id, "samples")}
    assert grids == {"samples/step-0000002.png", "samples/final.png"}
    assert "recipe.yaml" in {a.path for a in client.list_artifacts(run_id)}

    longer = make_recipe(
        tmp_path, digits_shards, *SHORT, "train.steps=4", "train.loggers=[jsonl,mlflow]"
    )
    fit(longer, run, CPU_CTX, resume=True, show=False)
    assert (run / "mlflow-run-id").read_text().strip() == run_id
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4]
    assert len(client.search_runs([found.info.experiment_id])) == 1


def _wandb_records(path: Path) -> list[Any]:
    """The protobuf records of an offline ``.wandb`` file (a LevelDB-style log of 32 KiB
    blocks, each record in chunks with a 7-byte header, after a 7-byte file header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, buffer, records = path.read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        buffer += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(buffer)
            records.append(record)
            buffer = b""
    return records


def _finished_records(path: Path, timeout: float = 30.0) -> list[Any]:
    """The records once wandb's writer has closed the file: ``run.finish()`` can return before
    its service has written the last records, the ``exit`` record last of all."""
    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_records(path)
        kinds = {record.WhichOneof("record_type") for record in records}
        if "exit" in kinds or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_wandb_offline_logs_metrics_config_and_grids(
    tmp_path: Path, digits_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    loggers = "train.loggers=[jsonl,{name: wandb, project: digits, tags: [test]}]"
    fit(make_recipe(tmp_path, digits_shards, *SHORT, loggers), run, CPU_CTX, show=False)
    run_id = (run / "wandb-run-id").read_text().strip()
    (offline,) = (run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    records = _finished_records(offline)
    history: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {
                "/".join(i.nested_key) or i.key: json.loads(i.value_json)
                for i in record.history.item
            }
            history.setdefault(items["_step"], {}).update(items)
    logged = read_metrics(run)
    assert sorted(history) == [1, 2, 3]
    assert [history[s]["loss"] for s in (1, 2, 3)] == pytest.approx([r["loss"] for r in logged])
    assert history[2]["samples/_type"] == "image-file"
    assert history[3]["samples/_type"] == "image-file"
    (start,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {i.key: json.loads(i.value_json) for i in start.config.update}
    assert config["method"]["name"] == "vanilla"
    assert config["run_dir"] == str(run.resolve())
    assert (start.project, list(start.tags)) == ("digits", ["test"])


def test_a_missing_tracker_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(AntError, match=r"pip install 'ant-diffusion\[wandb\]'"):
        WandbLogger(tmp_path)


def test_bad_logger_entries_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(AntError, match=r"train.loggers.1: .*'mlfow'.*did you mean 'mlflow'"):
        load_recipe("recipes/digits_dit.yaml", ["train.loggers=[jsonl,mlfow]"])
    with pytest.raises(AntError, match=r"train.loggers.0.projekt: unknown option .*'project'"):
        load_recipe("recipes/digits_dit.yaml", ["train.loggers=[{name: wandb, projekt: x}]"])
    result = run_ant("recipe", "validate", "recipes/digits_dit.yaml", "train.loggers=[tensorbord]")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "train.loggers.0", "tensorboard")
