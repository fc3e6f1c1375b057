"""``classifier:SHARDS``: a small CNN trained on the real data, for data Inception does not fit.

Inception features of 8x8 grey digits say little about digits. This extractor trains a small
CNN on the labelled images in SHARDS (deterministically: fixed seed, fixed split, CPU) and uses

- its penultimate features for a Fréchet distance (FD, never called FID), a kernel distance (KD)
  and precision/recall;
- its class predictions for the accuracy of class-conditional samples (does a sample drawn for
  class c look like c?) and the class coverage of samples.

The trained network is cached by the content hash of the shards and the training settings
(``CACHE/classifiers/``); its ``.json`` metadata records the held-out accuracy (20% of the data
never seen in training). Numbers from it are comparable only within one data set and one
classifier (the same cache entry), never with Inception-based numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from ant.core.atomic import torch_save
from ant.core.errors import AntError
from ant.core.progress import progress_bar
from ant.data.loader import make_loader
from ant.data.shards import resolve_shards
from ant.evaluation.cache import cache_dir, shards_digest, text_hash, write_json
from ant.evaluation.features import FeatureExtractor
from ant.evaluation.images import float_to_uint8

FIDELITY_NAME = "ant-classifier"
"""The classifier's name in torch-fidelity's feature-extractor registry."""
VERSION = 1
MAX_IMAGES = 100_000
MAX_SIZE = 32
"""Larger images are downscaled (antialiased) to MAX_SIZE x MAX_SIZE for the classifier."""


@dataclass(frozen=True)
class TrainSettings:
    """How the classifier is trained; part of its cache key."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    held_out: float = 0.2
    width: int = 16
    features: int = 128


class SmallCNN(nn.Module):
    """Two conv stages and a pooled head: ``x [B, C, S, S]`` in [-1, 1] -> (features, logits)."""

    def __init__(
        self, channels: int, num_classes: int, size: int, width: int = 16, features: int = 128
    ) -> None:
        super().__init__()
        self.channels = channels
        self.num_classes = num_classes
        self.size = size
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, features),
            nn.ReLU(),
        )
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features ``[B, features]`` and class logits ``[B, num_classes]``."""
        features = self.body(x)
        return features, self.head(features)


@contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """Run CPU work on one intra-op thread (restored afterwards).

    The classifier's operations are tiny: with several threads their synchronisation costs
    more than the arithmetic, many times over on a busy machine, and one thread also makes
    training bit-reproducible.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float in [-1, 1] at ``size`` x ``size`` (antialiased resize)."""
    x = images.float() / 127.5 - 1.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return x


class ClassifierNetwork(FeatureExtractorBase):
    """The trained classifier as a torch-fidelity feature extractor (``features``, ``logits``).

    ``feature_extractor_weights_path`` is a file written by :func:`trained_classifier`.
    """

    def __init__(
        self,
        name: str,
        features_list: list[str],
        feature_extractor_weights_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError("the ant classifier needs feature_extractor_weights_path")
        state = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
        self.net = SmallCNN(**state["config"])
        self.net.load_state_dict(state["state_dict"])
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("features", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "logits" if metric == "isc" else "features"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if input.dtype != torch.uint8 or input.ndim != 4 or input.shape[1] != self.net.channels:
            raise ValueError(
                f"expected uint8 images [B, {self.net.channels}, H, W], got "
                f"{input.dtype} {tuple(input.shape)}"
            )
        with one_thread(input.device):
            features, logits = self.net(preprocess(input, self.net.size))
        values = {"features": features, "logits": logits}
        return tuple(values[name] for name in self.features_list)


if FIDELITY_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(FIDELITY_NAME, ClassifierNetwork)


def load_labelled(spec: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The shards' images (uint8 ``[N, C, H, W]``), their labels ``[N]`` and the class count."""
    shard_set = resolve_shards(spec)
    meta = shard_set.meta
    if meta is not None and meta.format != "png":
        raise AntError(f"classifier:{spec}: the shards hold {meta.format} arrays, not images")
    if meta is not None and not meta.labelled:
        raise AntError(f"classifier:{spec}: the data is unlabelled; the classifier needs labels")
    if shard_set.count is not None and shard_set.count > MAX_IMAGES:
        raise AntError(
            f"classifier:{spec} is for small data sets (at most {MAX_IMAGES} images, this one has "
            f"{shard_set.count}): use the inception feature extractor"
        )
    loader = make_loader(
        spec, batch_size=512, rank=0, world_size=1, seed=0, resampled=False, shuffle_buffer=0
    )
    images, labels = [], []
    for x, y in loader:
        images.append(float_to_uint8(x))
        labels.append(y)
    if not images:
        raise AntError(f"classifier:{spec}: the shards hold no images")
    y_all = torch.cat(labels)
    if int(y_all.min()) < 0:
        raise AntError(
            f"classifier:{spec}: some images are unlabelled; the classifier needs labels"
        )
    num_classes = meta.num_classes if meta is not None else int(y_all.max()) + 1
    return torch.cat(images), y_all, num_classes


def _accuracy(model: SmallCNN, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        predictions = torch.cat([model(chunk)[1].argmax(1) for chunk in x.split(1024)])
    return float((predictions == y).float().mean())


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    settings: TrainSettings,
    *,
    progress: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train a :class:`SmallCNN` on the CPU: (checkpoint ``{config, state_dict}``, facts).

    A seeded permutation holds out ``settings.held_out`` of the images; the facts give the
    accuracy on them. The global RNG state is left as it was.
    """
    start = time.perf_counter()
    size = min(images.shape[-1], MAX_SIZE)
    x = preprocess(images, size)
    count = len(x)
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(count, generator=generator)
    held = max(1, round(settings.held_out * count)) if count > 1 else 0
    test_idx, train_idx = order[:held], order[held:]
    if len(train_idx) == 0:
        raise AntError("the classifier needs at least two labelled images")
    config = {
        "channels": images.shape[1],
        "num_classes": num_classes,
        "size": size,
        "width": settings.width,
        "features": settings.features,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = SmallCNN(**config)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    steps_per_epoch = -(-len(train_idx) // settings.batch_size)
    bar = progress_bar(progress)
    with bar, one_thread(torch.device("cpu")):
        task = bar.add_task("training the classifier", total=settings.epochs * steps_per_epoch)
        for _ in range(settings.epochs):
            model.train()
            shuffled = train_idx[torch.randperm(len(train_idx), generator=generator)]
            for batch in shuffled.split(settings.batch_size):
                loss = F.cross_entropy(model(x[batch])[1], labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.advance(task)
        facts = {
            "train_images": len(train_idx),
            "held_out_images": len(test_idx),
            "held_out_accuracy": _accuracy(model, x[test_idx], labels[test_idx]) if held else None,
            "train_accuracy": _accuracy(model, x[train_idx], labels[train_idx]),
            "seconds": round(time.perf_counter() - start, 3),
        }
    return {"config": config, "state_dict": model.state_dict()}, facts


@dataclass(frozen=True)
class TrainedClassifier:
    """A cached classifier: its weights file and its metadata."""

    path: Path
    meta: dict[str, Any]


def trained_classifier(
    spec: str, settings: TrainSettings | None = None, *, progress: bool = False
) -> TrainedClassifier:
    """The classifier of the shards ``spec``, from the cache or trained now and cached."""
    settings = settings or TrainSettings()
    digest = shards_digest(spec)
    key = f"{digest[:16]}-{text_hash(VERSION, asdict(settings))[:8]}"
    folder = cache_dir() / "classifiers"
    path, meta_path = folder / f"{key}.pt", folder / f"{key}.json"
    if path.is_file() and meta_path.is_file():
        return TrainedClassifier(path, json.loads(meta_path.read_text()))
    images, labels, num_classes = load_labelled(spec)
    checkpoint, facts = train_classifier(images, labels, num_classes, settings, progress=progress)
    torch_save(checkpoint, path)
    meta = {
        "data": spec,
        "data_sha256": digest,
        "images": len(images),
        "num_classes": num_classes,
        "image_shape": list(images.shape[1:]),
        **facts,
        "settings": asdict(settings),
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(meta_path, meta)
    return TrainedClassifier(path, meta)


class ClassifierExtractor(FeatureExtractor):
    """A small CNN trained on SHARDS (classifier:SHARDS): FD, class accuracy and coverage."""

    pool_layer = "features"
    logits_layer = "logits"

    def __init__(self, arg: str | None = None) -> None:
        if not arg:
            raise AntError(
                "feature extractor 'classifier' needs the real data: write classifier:SHARDS, "
                "e.g. classifier:data/digits"
            )
        super().__init__(f"classifier:{arg}")
        self.shards = arg
        self.trained: TrainedClassifier | None = None

    def prepare(self, weights: Path | None, *, progress: bool = False) -> None:
        if weights is not None:
            raise AntError(f"{self.spec} trains its own weights on the data: drop --weights for it")
        if self.trained is not None:
            return
        self.trained = trained_classifier(self.shards, progress=progress)
        meta = self.trained.meta
        self.num_classes = int(meta["num_classes"])
        self.channels = int(meta["image_shape"][0])

    def _trained(self) -> TrainedClassifier:
        if self.trained is None:
            raise RuntimeError("prepare() the feature extractor first")
        return self.trained

    @property
    def fingerprint(self) -> str:
        return f"{FIDELITY_NAME}-{self._trained().path.stem}"

    def network(self, layers: list[str]) -> FeatureExtractorBase:
        return ClassifierNetwork(
            FIDELITY_NAME, layers, feature_extractor_weights_path=str(self._trained().path)
        )

    def details(self) -> dict[str, Any]:
        trained = self._trained()
        keys = ("data_sha256", "images", "held_out_images", "held_out_accuracy", "num_classes")
        return {"weights": str(trained.path), **{k: trained.meta.get(k) for k in keys}}

    def implied_metrics(self, conditional: bool) -> list[str]:
        return ["accuracy", "coverage"] if conditional else ["coverage"]
