"""Experiment trackers as ``logger`` plugins: Weights & Biases and MLflow, beside ant's own
``jsonl`` and ``tensorboard`` (:mod:`ant.core.logbook`), all registered through the same hook.

Each logs the metric records (as :func:`ant.core.logbook.scalars`), the resolved recipe as the
run's configuration, the sample grids as images and the run directory's path, on rank 0. A
resumed run continues the same tracker run: its id is kept in the run directory
(``wandb-run-id``, ``mlflow-run-id``). The trackers are optional extras, imported when a recipe
asks for them; a missing one is one line naming the pip command.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ant.core.atomic import atomic_write
from ant.core.errors import AntError
from ant.core.hookspecs import hookimpl
from ant.core.logbook import scalars
from ant.core.registry import Lazy

MLFLOW_STORE = "mlflow"
"""The default MLflow store: a SQLite file and artifacts in ``mlflow/`` beside the run."""


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise AntError(
            f"train.loggers: '{extra}' needs the {module} package: "
            f"pip install 'ant-diffusion[{extra}]'"
        ) from None


def _stored_id(path: Path) -> str | None:
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def _store_id(path: Path, run_id: str) -> None:
    with atomic_write(path, text=True) as handle:
        handle.write(run_id + "\n")


def flatten(config: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted.key, value)`` for every leaf of a nested mapping (MLflow's parameters)."""
    if isinstance(config, dict):
        for key, value in config.items():
            yield from flatten(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), str(config)


class WandbLogger:
    """Weights & Biases (``pip install 'ant-diffusion[wandb]'``; ``WANDB_MODE=offline`` needs no
    network): metrics, the recipe as config, sample grids as images, files in ``RUN_DIR/wandb``."""

    def __init__(
        self,
        run_dir: Path,
        start_step: int = 0,
        config: Any = None,
        project: str = "ant",
        entity: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        mode: str | None = None,
    ) -> None:
        self.wandb = _require("wandb", "wandb")
        id_file = run_dir / "wandb-run-id"
        run_id = _stored_id(id_file) or uuid.uuid4().hex[:12]
        self.run = self.wandb.init(
            project=project,
            entity=entity,
            name=name or run_dir.name,
            group=group,
            tags=tags,
            mode=mode,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config={**(config or {}), "run_dir": str(run_dir.resolve())},
        )
        _store_id(id_file, run_id)

    def log(self, record: dict[str, Any]) -> None:
        self.run.log(scalars(record), step=int(record["step"]))

    def log_image(self, step: int, name: str, path: Path) -> None:
        self.run.log({name: self.wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowLogger:
    """MLflow (``pip install 'ant-diffusion[mlflow]'``): metrics, the recipe as parameters and
    ``recipe.yaml``, sample grids as artifacts; by default a local store beside the run."""

    def __init__(
        self,
        run_dir: Path,
        start_step: int = 0,
        config: Any = None,
        tracking_uri: str | None = None,
        experiment: str = "ant",
        run_name: str | None = None,
    ) -> None:
        mlflow = _require("mlflow", "mlflow")
        self.entities = mlflow.entities
        store = run_dir.resolve().parent / MLFLOW_STORE
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None:
            store.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{store / 'mlflow.db'}"
        self.uri = uri
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = (store / "artifacts").as_uri() if uri.startswith("sqlite:///") else None
            experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        id_file = run_dir / "mlflow-run-id"
        self.run_id = self._resume(_stored_id(id_file))
        if self.run_id is None:
            run = self.client.create_run(
                experiment_id,
                run_name=run_name or run_dir.name,
                tags={"ant.run_dir": str(run_dir.resolve())},
            )
            self.run_id = run.info.run_id
            params = [self.entities.Param(k, v[:6000]) for k, v in flatten(config or {})]
            for first in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[first : first + 100])
            self.client.log_dict(self.run_id, config or {}, "recipe.yaml")
            _store_id(id_file, self.run_id)

    def _resume(self, run_id: str | None) -> str | None:
        """The stored run, set running again, if this store holds it."""
        if run_id is None:
            return None
        try:
            self.client.update_run(run_id, status="RUNNING")
        except Exception:
            return None
        return run_id

    def log(self, record: dict[str, Any]) -> None:
        stamp, step = int(time.time() * 1000), int(record["step"])
        metrics = [self.entities.Metric(k, v, stamp, step) for k, v in scalars(record).items()]
        for first in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[first : first + 1000])

    def log_image(self, step: int, name: str, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path), name)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


@hookimpl
def ant_register_loggers(register: Any) -> None:
    register("jsonl", Lazy("ant.core.logbook", "JsonlLogger"))
    register("tensorboard", Lazy("ant.core.logbook", "TensorBoardLogger"))
    register("wandb", WandbLogger)
    register("mlflow", MlflowLogger)
