"""The metrics of ``ant eval``, computed from features with torch-fidelity's implementations.

Each metric is registered by name through the ``ant_register_metrics`` hook (``--metrics`` and
``eval.metrics`` select them). Its values are named after the extractor that produced the
features: the Fréchet distance is ``fid`` on Inception features and ``fd`` on any other, the
kernel distance ``kid`` or ``kd``.

========  ===================================================  ==============================
name      values                                               needs
========  ===================================================  ==============================
fid, fd   ``fid`` / ``fd``: Fréchet distance of pool features  reference statistics
isc       ``isc``, ``isc_std``: Inception Score (10 splits)    Inception
kid       ``kid``/``kd``, ``..._std``: kernel distance         reference features
prc       ``precision``, ``recall`` (k = 3 neighbours)         reference features
prc-vgg16 ``precision_vgg16``, ``recall_vgg16``                VGG16 weights, reference
accuracy  ``accuracy``: samples classified as their label      classifier, conditional model
coverage  ``coverage``, ``class_entropy``                      classifier
========  ===================================================  ==============================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch_fidelity.metric_fid import fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from ant.core.errors import AntError
from ant.evaluation.features import FeatureExtractor
from ant.evaluation.references import ReferenceStats, frechet_statistics

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PRC_NEIGHBOURS = 3
PRC_MAX_SAMPLES = 10_000
"""Precision/recall compare at most this many samples with as many reference features (seeded
subsets), as the ADM evaluator's 10k reference batches do; the cost is quadratic."""
ISC_SPLITS = 10
SUBSET_SEED = 2020

ReferenceNeed = Literal["none", "statistics", "features"]


@dataclass(frozen=True)
class MetricInput:
    """What a metric is computed from."""

    extractor: FeatureExtractor
    samples: dict[str, torch.Tensor]
    """Features of the samples, ``layer -> [N, D]``, in sample order."""
    labels: torch.Tensor | None
    """The class each sample was drawn for (class-conditional models), else ``None``."""
    reference: ReferenceStats | None
    device: torch.device


class Metric(ABC):
    """A metric of samples (and of a reference), computed on one extractor's features.

    ``extractor`` is the registered name of the feature extractor the metric always uses
    (``prc-vgg16``), or ``None`` for the one given by ``--feature-extractor``. ``reference``
    says what it needs of the reference: nothing, the statistics, or features.
    """

    extractor: str | None = None
    reference: ReferenceNeed = "none"

    @abstractmethod
    def layers(self, extractor: FeatureExtractor) -> list[str]:
        """The feature layers of the samples the metric reads."""

    def check(self, extractor: FeatureExtractor, num_classes: int) -> None:
        """Raise :class:`AntError` unless the metric applies (``num_classes``: the model's).

        Every metric applies to every extractor unless it says otherwise.
        """
        del extractor, num_classes

    @abstractmethod
    def compute(self, data: MetricInput) -> dict[str, float]:
        """The metric's values by name."""

    @property
    def identity(self) -> tuple[str, str | None]:
        """Metrics with the same identity compute the same values (``fid`` and ``fd``)."""
        return type(self).__name__, self.extractor


def _pool(data: MetricInput) -> torch.Tensor:
    features = data.samples[data.extractor.pool_layer]
    if len(features) < 2:
        raise AntError(f"metrics need at least 2 samples, got {len(features)}")
    return features


def _reference(data: MetricInput, what: str) -> ReferenceStats:
    if data.reference is None:
        raise RuntimeError(f"{what} needs the reference statistics")
    return data.reference


def _reference_features(data: MetricInput, what: str) -> torch.Tensor:
    reference = _reference(data, what)
    if reference.features is None or len(reference.features) < 2:
        raise AntError(
            f"{what} needs reference features, but {reference.path} holds statistics only: "
            "pass the reference images or shards as --ref"
        )
    return reference.features


def _subset(features: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    if len(features) <= limit:
        return features
    order = np.random.RandomState(seed).permutation(len(features))[:limit]
    return features[torch.from_numpy(np.sort(order))]


class FrechetDistance(Metric):
    """Fréchet distance between Gaussians fitted to pool features (FID on Inception, else FD)."""

    reference = "statistics"

    def layers(self, extractor: FeatureExtractor) -> list[str]:
        return [extractor.pool_layer]

    def compute(self, data: MetricInput) -> dict[str, float]:
        reference = _reference(data, "the Fréchet distance")
        mu, sigma = frechet_statistics(_pool(data))
        if mu.shape != reference.mu.shape:
            raise AntError(
                f"reference statistics have {len(reference.mu)} features, the extractor gives "
                f"{len(mu)}: use statistics of {data.extractor.spec}"
            )
        value = fid_statistics_to_metric(
            {"mu": mu, "sigma": sigma}, {"mu": reference.mu, "sigma": reference.sigma}, False
        )
        return {data.extractor.frechet_key: float(next(iter(value.values())))}


class InceptionScore(Metric):
    """Inception Score (Salimans et al. 2016) over 10 splits: exp E[KL(p(y|x) || p(y))]."""

    def layers(self, extractor: FeatureExtractor) -> list[str]:
        return [extractor.logits_layer or ""]

    def check(self, extractor: FeatureExtractor, num_classes: int) -> None:
        if not extractor.inception:
            raise AntError(
                f"isc needs the inception feature extractor, not {extractor.spec}: drop isc"
            )

    def compute(self, data: MetricInput) -> dict[str, float]:
        logits = data.samples[data.extractor.logits_layer or ""]
        splits = min(ISC_SPLITS, len(logits))
        value = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=SUBSET_SEED)
        mean, std = value.values()
        return {"isc": float(mean), "isc_std": float(std)}


class KernelDistance(Metric):
    """Kernel distance (KID on Inception, else KD): unbiased MMD^2, cubic kernel, 100 subsets."""

    reference = "features"

    def layers(self, extractor: FeatureExtractor) -> list[str]:
        return [extractor.pool_layer]

    def compute(self, data: MetricInput) -> dict[str, float]:
        samples = _pool(data)
        reference = _reference_features(data, "the kernel distance")
        size = min(KID_SUBSET_SIZE, len(samples), len(reference))
        value = kid_features_to_metric(
            samples,
            reference,
            kid_subsets=KID_SUBSETS,
            kid_subset_size=size,
            rng_seed=SUBSET_SEED,
            verbose=False,
        )
        mean, std = value.values()
        key = data.extractor.kernel_key
        return {key: float(mean), f"{key}_std": float(std)}


class PrecisionRecall(Metric):
    """Improved precision and recall (Kynkäänniemi et al. 2019), k = 3, on pool features."""

    reference = "features"

    def __init__(self, extractor: str | None = None) -> None:
        self.extractor = extractor

    def layers(self, extractor: FeatureExtractor) -> list[str]:
        return [extractor.pool_layer]

    def compute(self, data: MetricInput) -> dict[str, float]:
        samples = _subset(_pool(data), PRC_MAX_SAMPLES, SUBSET_SEED)
        reference = _subset(
            _reference_features(data, "precision/recall"), PRC_MAX_SAMPLES, SUBSET_SEED + 1
        )
        smallest = min(len(samples), len(reference))
        if smallest <= PRC_NEIGHBOURS:
            raise AntError(
                f"precision/recall need more than {PRC_NEIGHBOURS} samples and reference images"
            )
        value = prc_features_to_metric(
            samples.to(data.device),
            reference.to(data.device),
            prc_neighborhood=PRC_NEIGHBOURS,
            prc_batch_size=PRC_MAX_SAMPLES,
            save_cpu_ram=True,
            verbose=False,
        )
        suffix = f"_{self.extractor}" if self.extractor else ""
        return {
            f"precision{suffix}": float(value["precision"]),
            f"recall{suffix}": float(value["recall"]),
        }


def _predictions(data: MetricInput) -> torch.Tensor:
    return data.samples[data.extractor.logits_layer or ""].argmax(dim=1)


def _check_classifier(name: str, extractor: FeatureExtractor) -> None:
    if extractor.num_classes < 1 or extractor.logits_layer is None:
        raise AntError(
            f"{name} needs a classifier of the data's classes: use --feature-extractor "
            "classifier:SHARDS"
        )


class ClassAccuracy(Metric):
    """Share of samples the classifier assigns to the class they were drawn for."""

    def layers(self, extractor: FeatureExtractor) -> list[str]:
        return [extractor.logits_layer or ""]

    def check(self, extractor: FeatureExtractor, num_classes: int) -> None:
        _check_classifier("accuracy", extractor)
        if num_classes == 0:
            raise AntError("accuracy needs a class-conditional model; this one is unconditional")
        if num_classes != extractor.num_classes:
            raise AntError(
                f"accuracy: the model has {num_classes} classes, the classifier "
                f"{extractor.num_classes}: use a classifier trained on the model's data"
            )

    def compute(self, data: MetricInput) -> dict[str, float]:
        if data.labels is None:
            raise RuntimeError("accuracy needs the labels the samples were drawn for")
        hits = _predictions(data) == data.labels.to(torch.long)
        return {"accuracy": float(hits.double().mean())}


class ClassCoverage(Metric):
    """Class coverage: classes predicted at least once, and the normalised prediction entropy."""

    def layers(self, extractor: FeatureExtractor) -> list[str]:
        return [extractor.logits_layer or ""]

    def check(self, extractor: FeatureExtractor, num_classes: int) -> None:
        _check_classifier("coverage", extractor)

    def compute(self, data: MetricInput) -> dict[str, float]:
        classes = data.extractor.num_classes
        counts = torch.bincount(_predictions(data), minlength=classes).double()
        shares = counts / counts.sum()
        nonzero = shares[shares > 0]
        entropy = float(-(nonzero * nonzero.log()).sum()) / float(np.log(classes))
        return {
            "coverage": float((counts > 0).double().mean()),
            "class_entropy": entropy if classes > 1 else 1.0,
        }
