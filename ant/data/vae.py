"""The VAE of latent diffusion: diffusers' ``AutoencoderKL``, loaded offline, encoding and decoding.

A VAE is named by a local folder (what ``AutoencoderKL.save_pretrained`` writes: ``config.json``
and the weights) or by a hub name such as ``stabilityai/sd-vae-ft-ema``, which is looked up in
the local Hugging Face cache only: ant never downloads. diffusers is an optional dependency
(``pip install 'ant-diffusion[latent]'``), imported only when a VAE is loaded.

Latents are ``z = (posterior - shift) * scale``, ``scale`` being the recipe's or, by default, the
VAE config's ``scaling_factor`` (0.18215 for Stable Diffusion's VAE, which gives latents of
roughly unit variance) and ``shift`` the config's ``shift_factor`` (0 when absent). Decoding
inverts it and returns images in [-1, 1].
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ant.core.errors import AntError

DEFAULT_SCALE = 0.18215
"""The latent scale of Stable Diffusion's VAE (LDM, DiT), used when the config has none."""
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
POSTERIORS = ("sample", "mean")
INSTALL_HINT = "pip install 'ant-diffusion[latent]' (or pip install 'diffusers>=0.27')"
FIX_HINT = (
    "pass a folder written by AutoencoderKL.save_pretrained (config.json and weights), or a hub "
    "name in the local Hugging Face cache such as stabilityai/sd-vae-ft-ema"
)


@dataclass(frozen=True)
class VaeSpec:
    """Which VAE to load and how to run it.

    ``scale`` None takes the VAE config's ``scaling_factor`` (else :data:`DEFAULT_SCALE`).
    """

    name_or_path: str
    subfolder: str | None = None
    scale: float | None = None
    precision: str = "fp32"


def _import_autoencoder() -> Any:
    try:
        from diffusers import AutoencoderKL
    except ImportError as exc:
        raise AntError(
            f"latent diffusion needs diffusers, which cannot be imported ({exc}): {INSTALL_HINT}"
        ) from None
    return AutoencoderKL


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a folder rather than a hub name (``name`` or ``org/name``)."""
    return (
        name.startswith(("/", ".", "~"))
        or name.endswith("/")
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def locate(spec: VaeSpec) -> tuple[str, bool]:
    """What to pass to ``from_pretrained`` and whether it is a local folder (checked here)."""
    name = spec.name_or_path
    path = Path(name).expanduser()
    if path.exists():
        folder = path / spec.subfolder if spec.subfolder else path
        if not folder.is_dir():
            raise AntError(f"VAE path '{folder}' is not a folder: {FIX_HINT}")
        if not (folder / "config.json").is_file():
            raise AntError(f"VAE folder '{folder}' has no config.json: {FIX_HINT}")
        return str(path), True
    if looks_like_path(name) or not name:
        raise AntError(f"VAE folder '{name}' does not exist: {FIX_HINT}")
    return name, False


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub ships with diffusers
        return "the Hugging Face cache"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence diffusers' and huggingface_hub's log lines and warnings while loading."""
    loggers = [logging.getLogger(name) for name in ("diffusers", "huggingface_hub")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def load_autoencoder(spec: VaeSpec) -> nn.Module:
    """The ``AutoencoderKL`` of ``spec`` on the CPU in eval mode, never from the network."""
    if spec.precision not in PRECISIONS:
        raise AntError(f"VAE precision '{spec.precision}': choose one of {', '.join(PRECISIONS)}")
    target, local = locate(spec)
    autoencoder_kl = _import_autoencoder()
    options: dict[str, Any] = {"local_files_only": True}
    if spec.subfolder:
        options["subfolder"] = spec.subfolder
    try:
        with _quiet():
            model = autoencoder_kl.from_pretrained(target, **options)
    except (OSError, ValueError) as exc:
        if local:
            raise AntError(
                f"cannot load the VAE in '{target}' ({_first_line(exc)}): {FIX_HINT}"
            ) from None
        where = f"{target}" + (f" (subfolder {spec.subfolder})" if spec.subfolder else "")
        raise AntError(
            f"VAE '{where}' is neither a local folder nor in the local Hugging Face cache "
            f"({_hub_cache()}), and ant never downloads: run 'hf download {target}' where there "
            "is internet and copy the cache here (or point HF_HOME at it), or pass a folder "
            "written by AutoencoderKL.save_pretrained"
        ) from None
    except Exception as exc:
        raise AntError(
            f"cannot load the VAE '{target}' ({type(exc).__name__}: {_first_line(exc)}): {FIX_HINT}"
        ) from None
    if not isinstance(model, nn.Module) or not hasattr(model, "decode"):
        raise AntError(f"'{target}' did not load as an AutoencoderKL: {FIX_HINT}")
    model.requires_grad_(False)
    return model.eval()


def sample_seed(seed: int, key: str) -> int:
    """A 63-bit seed for the posterior noise of the sample ``key`` (independent of batching)."""
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def keyed_noise(seed: int, keys: Sequence[str], shape: Sequence[int]) -> torch.Tensor:
    """Standard normal noise ``[len(keys), *shape]``, each row from its key's own generator."""
    rows = [
        torch.randn(tuple(shape), generator=torch.Generator().manual_seed(sample_seed(seed, key)))
        for key in keys
    ]
    return torch.stack(rows)


class Vae:
    """A loaded VAE on one device: images in [-1, 1] <-> scaled latents, batched, without grad.

    - :meth:`encode`: images ``[B, C, H, W]`` (grey is repeated to RGB, alpha dropped) ->
      float32 latents ``[B, latent_channels, H / factor, W / factor]``; ``posterior`` ``mean``
      (deterministic) or ``sample`` (mean + std * noise, noise given or from ``generator`` or
      the global RNG).
    - :meth:`decode`: latents -> float32 images in [-1, 1] on the latents' device.
    """

    def __init__(
        self, autoencoder: nn.Module, spec: VaeSpec, device: torch.device | str = "cpu"
    ) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.dtype = PRECISIONS[spec.precision]
        with _quiet():
            self.autoencoder = autoencoder.to(device=self.device, dtype=self.dtype)
        config = getattr(autoencoder, "config", None)
        configured = getattr(config, "scaling_factor", None)
        self.scale = float(spec.scale if spec.scale is not None else configured or DEFAULT_SCALE)
        self.shift = float(getattr(config, "shift_factor", None) or 0.0)
        self.image_channels = int(getattr(config, "in_channels", 3))
        self.out_channels = int(getattr(config, "out_channels", 3))
        self.latent_channels = int(getattr(config, "latent_channels", 4))
        blocks = getattr(config, "block_out_channels", (0, 0, 0, 0))
        self.factor = 2 ** (len(blocks) - 1)

    @classmethod
    def load(cls, spec: VaeSpec, device: torch.device | str = "cpu") -> Vae:
        """Load ``spec`` (see :func:`load_autoencoder`) onto ``device``."""
        return cls(load_autoencoder(spec), spec, device)

    @property
    def name(self) -> str:
        """The VAE as named in the recipe or on the command line."""
        spec = self.spec
        return spec.name_or_path + (f" (subfolder {spec.subfolder})" if spec.subfolder else "")

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """``(C, H, W)`` of the latent of an image of shape ``(C, H, W)``."""
        _, height, width = image_shape
        return (self.latent_channels, height // self.factor, width // self.factor)

    def image_shape(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        """``(C, H, W)`` of the image decoded from a latent of shape ``(C, H, W)``."""
        _, height, width = latent_shape
        return (self.out_channels, height * self.factor, width * self.factor)

    def _as_input(self, images: torch.Tensor) -> torch.Tensor:
        channels = images.shape[1]
        if channels == 4 and self.image_channels == 3:
            images = images[:, :3]
        elif channels == 1 and self.image_channels == 3:
            images = images.expand(-1, 3, -1, -1)
        elif channels != self.image_channels:
            raise AntError(
                f"images have {channels} channels but the VAE {self.name} takes "
                f"{self.image_channels}: pack 1-, 3- or 4-channel images"
            )
        height, width = images.shape[-2:]
        if height % self.factor or width % self.factor:
            raise AntError(
                f"images of {height}x{width} are not divisible by the VAE's downsampling factor "
                f"{self.factor}: pack them with --image-size a multiple of {self.factor}"
            )
        return images.to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def encode(
        self,
        images: torch.Tensor,
        *,
        posterior: str = "sample",
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Scaled float32 latents of ``images`` in [-1, 1], on the VAE's device."""
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}")
        autoencoder: Any = self.autoencoder
        distribution = autoencoder.encode(self._as_input(images)).latent_dist
        z = distribution.mean.float()
        if posterior == "sample":
            if noise is None:
                noise = torch.randn(z.shape, generator=generator, device=z.device)
            z = z + distribution.std.float() * noise.to(z.device, torch.float32)
        # The posterior's mean is a view into a [B, 2C, h, w] tensor: make the latents contiguous,
        # or randn_like (the training noise) would follow its strides and draw differently.
        return ((z - self.shift) * self.scale).contiguous()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (float32, on ``latents``' device) decoded from scaled latents."""
        z = latents.to(device=self.device, dtype=torch.float32) / self.scale + self.shift
        autoencoder: Any = self.autoencoder
        images = autoencoder.decode(z.to(self.dtype)).sample
        return images.float().clamp(-1.0, 1.0).to(latents.device)

    def describe(self) -> dict[str, Any]:
        """What identifies the latents this VAE makes (for meta.json)."""
        return {
            "vae": self.spec.name_or_path,
            "subfolder": self.spec.subfolder,
            "scale": self.scale,
            "shift": self.shift,
            "factor": self.factor,
            "latent_channels": self.latent_channels,
        }
