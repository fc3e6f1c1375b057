"""Feature extractors for the metrics: torch-fidelity's Inception and VGG16, and their weights.

A :class:`FeatureExtractor` is what ``--feature-extractor NAME[:ARG]`` selects. It is registered
like a metric through the ``ant_register_metrics`` hook (its factory is called with ``arg``) and
wraps a torch-fidelity ``FeatureExtractorBase`` network that turns uint8 images into features:

- ``inception``: torch-fidelity's port of the TensorFlow Inception-v3 used for FID
  (``inception-v3-compat``); 2048-d pool features and the unbiased logits for the Inception Score.
- ``vgg16``: torch-fidelity's VGG16 (``fc2_relu`` features), its default for precision/recall.

Weights never come from the network: ``--weights PATH`` or the file torch-fidelity would have
downloaded, in the torch hub cache. A missing file is a one-line :class:`AntError` that says
where to get it, raised before any sampling starts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.utils import create_feature_extractor

from ant.core.atomic import load_torch_file
from ant.core.errors import AntError
from ant.core.progress import progress_bar
from ant.evaluation.cache import file_digest
from ant.evaluation.images import ImageSet, to_channels

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
"""torchvision's ImageNet VGG16 weights (``VGG16_Weights.IMAGENET1K_V1``)."""


class FeatureExtractor(ABC):
    """A feature network for the metrics, selected by ``--feature-extractor NAME[:ARG]``.

    - ``pool_layer``: the features of the Fréchet distance, kernel distance and precision/recall;
    - ``logits_layer``: class logits (Inception Score, classifier accuracy and coverage), if any;
    - ``num_classes``: the classes of ``logits_layer`` when they are the data set's classes;
    - ``inception``: metrics on it are named FID and KID; on any other extractor FD and KD;
    - ``channels``: the image channels the network takes (grey is repeated to RGB, and so on).

    :meth:`prepare` finds the weights (or trains the network) and must run before
    :attr:`fingerprint` and :meth:`network`.
    """

    pool_layer: str
    logits_layer: str | None = None
    num_classes: int = 0
    inception: bool = False
    channels: int = 3

    def __init__(self, spec: str) -> None:
        self.spec = spec

    @abstractmethod
    def prepare(self, weights: Path | None, *, progress: bool = False) -> None:
        """Locate or build the weights; raise :class:`AntError` if that is impossible."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the network and its weights (part of every cache key of its features)."""

    @abstractmethod
    def network(self, layers: list[str]) -> FeatureExtractorBase:
        """The torch-fidelity network giving ``layers``, on the CPU in eval mode."""

    def details(self) -> dict[str, Any]:
        """Facts about the extractor for the metrics report."""
        return {}

    def implied_metrics(self, conditional: bool) -> list[str]:
        """Metrics reported whenever this extractor is used (besides those asked for)."""
        return []

    @property
    def frechet_key(self) -> str:
        """``fid`` on Inception features, ``fd`` on any other."""
        return "fid" if self.inception else "fd"

    @property
    def kernel_key(self) -> str:
        """``kid`` on Inception features, ``kd`` on any other."""
        return "kid" if self.inception else "kd"


def hub_checkpoint(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url(url)`` keeps its download."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


class TorchFidelityExtractor(FeatureExtractor):
    """A pretrained torch-fidelity feature extractor whose weights are a local file."""

    registry_name: str = ""
    fidelity_name: str
    weights_url: str
    title: str

    def __init__(self, arg: str | None = None) -> None:
        name = type(self).registry_name
        if arg is not None:
            raise AntError(f"feature extractor '{name}' takes no argument: write '{name}'")
        super().__init__(name)
        self.weights: Path | None = None

    def prepare(self, weights: Path | None, *, progress: bool = False) -> None:
        path = weights.expanduser() if weights is not None else hub_checkpoint(self.weights_url)
        if not path.is_file():
            where = f"--weights {path} does not exist" if weights is not None else "not found"
            raise AntError(
                f"{self.title} weights {where} (ant never downloads them): download "
                f"{self.weights_url} and pass --weights PATH (or put it in {path.parent}/)"
            )
        state = load_torch_file(path, f"{self.title} weights file (from {self.weights_url})")
        if not isinstance(state, dict):
            raise AntError(f"{path} is not a {self.title} state dict: download {self.weights_url}")
        self.weights = path

    @property
    def fingerprint(self) -> str:
        if self.weights is None:
            raise RuntimeError("prepare() the feature extractor first")
        return f"{self.fidelity_name}-{file_digest(self.weights)[:16]}"

    def network(self, layers: list[str]) -> FeatureExtractorBase:
        if self.weights is None:
            raise RuntimeError("prepare() the feature extractor first")
        try:
            net: FeatureExtractorBase = create_feature_extractor(
                self.fidelity_name,
                layers,
                cuda=False,
                feature_extractor_weights_path=str(self.weights),
                verbose=False,
            )
        except (RuntimeError, OSError, KeyError, ValueError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise AntError(
                f"{self.weights} does not hold {self.title} weights ({detail}): download "
                f"{self.weights_url}"
            ) from None
        return net

    def details(self) -> dict[str, Any]:
        return {"weights": str(self.weights) if self.weights else None}


class InceptionExtractor(TorchFidelityExtractor):
    """Inception-v3 (torch-fidelity's TF-compatible port): FID, IS, KID, precision/recall."""

    registry_name = "inception"
    fidelity_name = "inception-v3-compat"
    weights_url = URL_INCEPTION_V3
    title = "Inception-v3"
    pool_layer = "2048"
    logits_layer = "logits_unbiased"
    inception = True


class VGG16Extractor(TorchFidelityExtractor):
    """VGG16 fc2 features (torch-fidelity's default for precision/recall)."""

    registry_name = "vgg16"
    fidelity_name = "vgg16"
    weights_url = VGG16_URL
    title = "VGG16"
    pool_layer = "fc2_relu"


def iter_features(
    extractor: FeatureExtractor,
    layers: list[str],
    images: ImageSet,
    *,
    batch_size: int,
    device: torch.device,
    description: str,
    progress: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """The features of ``images``, one dict ``layer -> [B, D]`` (float32, CPU) per batch.

    A progress bar with ETA counts images on stderr when ``progress`` is set.
    """
    net = extractor.network(layers).to(device)
    bar = progress_bar(progress)
    with bar, torch.inference_mode():
        task = bar.add_task(description, total=images.count)
        for batch in images.batches(batch_size):
            pixels = to_channels(batch, extractor.channels).to(device)
            values = net.convert_features_tuple_to_dict(net(pixels))
            yield {layer: values[layer].float().cpu() for layer in layers}
            bar.advance(task, len(batch))


def extract_features(
    extractor: FeatureExtractor,
    layers: list[str],
    images: ImageSet,
    *,
    batch_size: int,
    device: torch.device,
    description: str,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """All features of ``images``: ``layer -> [N, D]`` (float32, CPU)."""
    parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    count = 0
    for values in iter_features(
        extractor,
        layers,
        images,
        batch_size=batch_size,
        device=device,
        description=description,
        progress=progress,
    ):
        for layer in layers:
            parts[layer].append(values[layer])
        count += 1
    if count == 0:
        raise AntError(f"no images in {images.description}")
    return {layer: torch.cat(chunks) for layer, chunks in parts.items()}
