"""From metric names, an extractor and a reference to numbers: the evaluation pipeline.

:class:`Evaluator` resolves everything that can fail before any sample is drawn (metric and
extractor names, weights files, the reference, the classifier's training), then evaluates any
number of image sets against the same reference, reading its statistics once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ant.core.errors import AntError
from ant.core.plugins import registry
from ant.evaluation.features import FeatureExtractor, extract_features
from ant.evaluation.images import ImageSet
from ant.evaluation.metrics import Metric, MetricInput
from ant.evaluation.references import (
    ReferenceSource,
    ReferenceStats,
    reference_statistics,
    resolve_reference,
)


def split_spec(spec: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME:ARG`` -> (NAME, ARG or None)."""
    name, sep, arg = spec.partition(":")
    return name, (arg if sep else None)


def build_extractor(spec: str) -> FeatureExtractor:
    """The feature extractor ``NAME[:ARG]`` from the ``extractor`` registry (not yet prepared)."""
    name, arg = split_spec(spec)
    if name not in registry("extractor") and name in registry("metric"):
        raise AntError(f"'{name}' is a metric, not a feature extractor: pass it with --metrics")
    built = registry("extractor").get(name).build(arg=arg)
    if not isinstance(built, FeatureExtractor):
        raise AntError(f"extractor '{name}' built a {type(built).__name__}, not a FeatureExtractor")
    return built


def build_metric(name: str) -> Metric:
    """The metric ``name`` from the ``metric`` registry."""
    if name not in registry("metric") and name in registry("extractor"):
        raise AntError(
            f"'{name}' is a feature extractor, not a metric: pass it with --feature-extractor"
        )
    built = registry("metric").get(name).build()
    if not isinstance(built, Metric):
        raise AntError(f"metric '{name}' built a {type(built).__name__}, not a Metric")
    return built


def parse_weights(values: Sequence[str], main: str) -> dict[str, Path]:
    """``--weights`` values: ``PATH`` (for the ``main`` extractor) or ``NAME=PATH``."""
    known = set(registry("extractor").names())
    weights: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if sep and name in known:
            weights[name] = Path(path)
        else:
            weights[main] = Path(value)
    return weights


@dataclass
class EvalResult:
    """The values of one evaluation and what they were computed against."""

    metrics: dict[str, float]
    reference: dict[str, Any] | None
    seconds: float
    extractors: dict[str, dict[str, Any]] = field(default_factory=dict)


class Evaluator:
    """Metrics of image sets against one reference, with every input checked up front.

    - ``metrics``: registered metric names (``fid``, ``prc``, ...); the extractor's implied
      metrics (the classifier's accuracy and coverage) are added.
    - ``feature_extractor``: ``NAME[:ARG]`` (``inception``, ``vgg16``, ``classifier:SHARDS``).
    - ``reference``: the ``--ref`` spec; required when a metric compares with a reference.
    - ``weights``: weights files by extractor name (``parse_weights``).
    - ``num_classes``: the model's classes (0 = unconditional), to check class metrics.
    """

    def __init__(
        self,
        *,
        metrics: Sequence[str],
        feature_extractor: str,
        reference: str | None,
        weights: Mapping[str, Path] | None = None,
        num_classes: int = 0,
        device: torch.device | None = None,
        batch_size: int = 64,
        progress: bool = False,
    ) -> None:
        if batch_size < 1:
            raise AntError(f"--batch-size must be at least 1, got {batch_size}")
        weights = dict(weights or {})
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size
        self.progress = progress
        self.main = build_extractor(feature_extractor)
        names = [*metrics, *self.main.implied_metrics(num_classes > 0)]
        self.metrics = self._unique([build_metric(name) for name in names])
        if not self.metrics:
            raise AntError("no metrics to compute: pass --metrics, e.g. --metrics fid")
        self.extractors: dict[str | None, FeatureExtractor] = {None: self.main}
        for metric in self.metrics:
            if metric.extractor is not None and metric.extractor not in self.extractors:
                self.extractors[metric.extractor] = build_extractor(metric.extractor)
        names_of = {None: split_spec(feature_extractor)[0]} | {
            name: name for name in self.extractors if name is not None
        }
        unused = set(weights) - set(names_of.values())
        if unused:
            raise AntError(f"--weights for {', '.join(sorted(unused))}, which no metric here uses")
        for name, extractor in self.extractors.items():
            extractor.prepare(weights.get(names_of[name]), progress=progress)
        self.source = self._source(reference)
        for metric in self.metrics:
            metric.check(self.extractors[metric.extractor], num_classes)
        self._stats: dict[str, ReferenceStats] = {}
        if self.source is not None and self.source.kind == "statistics":
            for name in {m.extractor for m in self.metrics if m.reference != "none"}:
                self.reference_stats(self.extractors[name])

    @staticmethod
    def _unique(metrics: list[Metric]) -> list[Metric]:
        seen: dict[tuple[str, str | None], Metric] = {}
        for metric in metrics:
            seen.setdefault(metric.identity, metric)
        return list(seen.values())

    def _source(self, reference: str | None) -> ReferenceSource | None:
        needs = {metric.reference for metric in self.metrics} - {"none"}
        if not needs:
            return None
        if not reference:
            raise AntError(
                "no reference to compare with: pass --ref (shards, an image folder or "
                "reference statistics) or set eval.ref in the recipe"
            )
        source = resolve_reference(reference)
        if source.kind == "statistics" and "features" in needs:
            raise AntError(
                f"{reference} holds statistics only, but KID/KD and precision/recall need "
                "reference features: pass the reference images or shards"
            )
        return source

    @property
    def frechet_key(self) -> str:
        """The name of the Fréchet distance here: ``fid`` or ``fd``."""
        return self.main.frechet_key

    def reference_stats(self, extractor: FeatureExtractor) -> ReferenceStats:
        """The reference statistics under ``extractor`` (cached on disk and in memory)."""
        if self.source is None:
            raise RuntimeError("no metric here needs a reference")
        key = extractor.fingerprint
        if key not in self._stats:
            self._stats[key] = reference_statistics(
                self.source,
                extractor,
                batch_size=self.batch_size,
                device=self.device,
                progress=self.progress,
            )
        return self._stats[key]

    def layers(self, extractor_name: str | None) -> list[str]:
        """Every feature layer of the samples that the metrics on this extractor read."""
        extractor = self.extractors[extractor_name]
        found: dict[str, None] = {}
        for metric in self.metrics:
            if metric.extractor == extractor_name:
                found.update(dict.fromkeys(metric.layers(extractor)))
        return list(found)

    def sample_features(
        self, images: ImageSet, description: str = "sample features"
    ) -> dict[str | None, dict[str, torch.Tensor]]:
        """The features of ``images`` under every extractor the metrics use."""
        return {
            name: extract_features(
                extractor,
                self.layers(name),
                images,
                batch_size=self.batch_size,
                device=self.device,
                description=description,
                progress=self.progress,
            )
            for name, extractor in self.extractors.items()
        }

    def compute(
        self,
        features: Mapping[str | None, dict[str, torch.Tensor]],
        labels: torch.Tensor | None,
    ) -> dict[str, float]:
        """Every metric's values from sample features (as :meth:`sample_features` gives them)."""
        values: dict[str, float] = {}
        for metric in self.metrics:
            extractor = self.extractors[metric.extractor]
            reference = self.reference_stats(extractor) if metric.reference != "none" else None
            data = MetricInput(
                extractor=extractor,
                samples=features[metric.extractor],
                labels=labels,
                reference=reference,
                device=self.device,
            )
            values.update(metric.compute(data))
        return values

    def evaluate(self, images: ImageSet, labels: torch.Tensor | None = None) -> EvalResult:
        """The metrics of ``images`` (``labels``: the class each was drawn for, if any)."""
        start = time.perf_counter()
        values = self.compute(self.sample_features(images), labels)
        return EvalResult(
            metrics=values,
            reference=self.reference_info(),
            seconds=time.perf_counter() - start,
            extractors=self.extractor_info(),
        )

    def reference_info(self) -> dict[str, Any] | None:
        """What the report says about the reference (after :meth:`compute`)."""
        if self.source is None or not self._stats:
            return None
        stats = self._stats.get(self.main.fingerprint) or next(iter(self._stats.values()))
        return stats.info(self.source)

    def extractor_info(self) -> dict[str, dict[str, Any]]:
        """Spec, fingerprint and details of every extractor in use."""
        return {
            extractor.spec: {"fingerprint": extractor.fingerprint, **extractor.details()}
            for extractor in self.extractors.values()
        }
