"""Registers the metrics, feature extractors, ``ant eval`` and ``ant plot`` through the hooks.

The factories import their modules when a metric is built, so listing plugins or starting any
``ant`` command does not import torch-fidelity (and torchvision).
"""

from __future__ import annotations

from typing import Any

from ant.core.hookspecs import hookimpl
from ant.core.registry import Lazy

METRICS = "ant.evaluation.metrics"
FEATURES = "ant.evaluation.features"


@hookimpl
def ant_register_metrics(register: Any) -> None:
    frechet = Lazy(METRICS, "FrechetDistance")
    register("fid", frechet, "Fréchet distance of pool features (FID on Inception)")
    register("fd", frechet, "Fréchet distance of pool features (FD: any extractor)")
    register("isc", Lazy(METRICS, "InceptionScore"), "Inception Score over 10 splits")
    register("kid", Lazy(METRICS, "KernelDistance"), "Kernel distance (KID on Inception, else KD)")
    register("prc", Lazy(METRICS, "PrecisionRecall"), "Precision and recall, k = 3, pool features")
    register(
        "prc-vgg16",
        Lazy(METRICS, "PrecisionRecall", {"extractor": "vgg16"}),
        "Precision and recall on VGG16 features (torch-fidelity's default)",
    )
    register("accuracy", Lazy(METRICS, "ClassAccuracy"), "Classifier accuracy of class samples")
    register("coverage", Lazy(METRICS, "ClassCoverage"), "Classes predicted, prediction entropy")


@hookimpl
def ant_register_extractors(register: Any) -> None:
    register(
        "inception",
        Lazy(FEATURES, "InceptionExtractor"),
        "Feature extractor: Inception-v3 (torch-fidelity's TF-compatible port)",
    )
    register("vgg16", Lazy(FEATURES, "VGG16Extractor"), "Feature extractor: VGG16 fc2 features")
    register(
        "classifier",
        Lazy("ant.evaluation.classifier", "ClassifierExtractor"),
        "Feature extractor classifier:SHARDS: a small CNN trained on the data (FD, accuracy)",
    )
