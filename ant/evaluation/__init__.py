"""Evaluation: sample a checkpoint, extract features, compare with a reference.

- ``ant eval`` (:mod:`ant.evaluation.run`): samples into a resumable folder, FID / FD, IS, KID,
  precision/recall (torch-fidelity's implementations), classifier accuracy and coverage;
- :func:`evaluate_during_training`: the same metrics at ``eval.every`` steps, for curves;
- ``ant plot``: metric-vs-step curves of runs;
- ``ant analyze ntg`` (:mod:`ant.evaluation.ntg`): negative transfer gaps of interval models.

Metrics and feature extractors are registered through the ``ant_register_metrics`` hook. The
names below are imported on first use, so loading the plugins does not import torch-fidelity.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ant.evaluation.evaluator import EvalResult, Evaluator
    from ant.evaluation.features import FeatureExtractor
    from ant.evaluation.metrics import Metric, MetricInput
    from ant.evaluation.ntg import TimestepRouter, negative_transfer_gaps
    from ant.evaluation.run import EvalOptions, evaluate_checkpoint
    from ant.evaluation.training import evaluate_during_training, training_evaluator

_EXPORTS = {
    "EvalOptions": "ant.evaluation.run",
    "EvalResult": "ant.evaluation.evaluator",
    "Evaluator": "ant.evaluation.evaluator",
    "FeatureExtractor": "ant.evaluation.features",
    "Metric": "ant.evaluation.metrics",
    "MetricInput": "ant.evaluation.metrics",
    "TimestepRouter": "ant.evaluation.ntg",
    "evaluate_checkpoint": "ant.evaluation.run",
    "evaluate_during_training": "ant.evaluation.training",
    "negative_transfer_gaps": "ant.evaluation.ntg",
    "training_evaluator": "ant.evaluation.training",
}

__all__ = [
    "EvalOptions",
    "EvalResult",
    "Evaluator",
    "FeatureExtractor",
    "Metric",
    "MetricInput",
    "TimestepRouter",
    "evaluate_checkpoint",
    "evaluate_during_training",
    "negative_transfer_gaps",
    "training_evaluator",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ant.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
