"""The metrics file of ``ant eval`` (``metrics.json``): a versioned, typed schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ant.core.atomic import atomic_write
from ant.sampling.settings import SampleSettings


class Frozen(BaseModel):
    """A part of the report: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class SamplingInfo(Frozen):
    """How the samples were drawn."""

    sampler: str
    steps: int
    eta: float
    cfg_scale: float
    seed: int
    clip_x0: bool
    num_samples: int
    samples_dir: str
    written: int
    """Samples drawn by this run; the rest were already in ``samples_dir``."""

    @classmethod
    def of(cls, settings: SampleSettings, samples_dir: Path, written: int) -> SamplingInfo:
        """The report of ``settings.num`` samples drawn into ``samples_dir``."""
        return cls(
            sampler=settings.sampler,
            steps=settings.steps,
            eta=settings.eta,
            cfg_scale=settings.cfg_scale,
            seed=settings.seed,
            clip_x0=settings.clip_x0,
            num_samples=settings.num,
            samples_dir=str(samples_dir),
            written=written,
        )


class EvalReport(Frozen):
    """``metrics.json``: the metrics of one checkpoint and everything needed to reproduce them."""

    format: Literal["ant-eval/1"] = "ant-eval/1"
    checkpoint: str
    step: int
    weights: str
    """``EMA`` or ``raw``."""
    recipe: str
    sampling: SamplingInfo
    feature_extractor: str
    extractors: dict[str, dict[str, Any]]
    reference: dict[str, Any] | None
    metrics: dict[str, float]
    npz: str | None = None
    seconds: dict[str, float]
    created: str

    def write(self, path: Path) -> Path:
        """Write the report as indented JSON, atomically."""
        with atomic_write(path, text=True) as handle:
            handle.write(self.model_dump_json(indent=2) + "\n")
        return path
