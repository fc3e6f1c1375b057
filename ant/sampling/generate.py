"""Drawing samples from a denoiser: respacing, classifier-free guidance, per-sample seeding.

Every sample's noise comes from its own generator seeded by (seed, sample index) (see
:mod:`ant.sampling.noise`), so the samples of a seed do not depend on the batch size or on how
the indices are split over processes (up to float rounding in batched model arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from ant.core.errors import AntError
from ant.core.progress import step_progress
from ant.diffusion import GaussianDiffusion, classifier_free_guidance, ddim_step, ddpm_step
from ant.diffusion.samplers import SamplerName
from ant.sampling.labels import class_labels
from ant.sampling.model_info import ModelInfo
from ant.sampling.noise import SampleNoise
from ant.sampling.settings import SampleSettings

SAMPLERS: tuple[SamplerName, ...] = ("ddpm", "ddim")


class SampleDecoder(Protocol):
    """Turns the model's samples into images (latent diffusion: :class:`ant.data.vae.Vae`)."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] ``[B, C', H', W']`` from samples ``[B, C, H, W]``."""
        ...

    def image_shape(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        """The ``(C', H', W')`` of an image decoded from a sample of shape ``(C, H, W)``."""
        ...


class BatchSampler:
    """Draws batches of samples from one model with fixed sampler settings.

    - ``sampler``: ``ddpm`` (ancestral, with the process's default variance) or ``ddim`` (with
      ``eta``), on ``diffusion`` respaced to ``steps`` steps.
    - ``cfg_scale``: classifier-free guidance scale, used when it is not 1 and the model is
      class-conditional (the null label is the model's ``null_label``); ignored otherwise.
    - ``clip_x0``: clamp each x0 prediction to [-1, 1] (pixels; leave off for latents).
    - ``decoder``: decodes every batch of samples into images (a latent model's VAE); ``None``
      returns the samples as drawn.

    The model must already be on ``device``; it runs in eval mode under
    ``torch.inference_mode()`` and gets its previous mode back afterwards.
    """

    def __init__(
        self,
        model: nn.Module,
        diffusion: GaussianDiffusion,
        *,
        sampler: SamplerName = "ddpm",
        steps: int = 250,
        eta: float = 0.0,
        cfg_scale: float = 1.0,
        clip_x0: bool = False,
        device: torch.device | str = "cpu",
        decoder: SampleDecoder | None = None,
    ) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
        self.model = model
        self.info = ModelInfo.of(model)
        self.process = diffusion.respaced(steps)
        self.sampler = sampler
        self.eta = eta
        self.clip_x0 = clip_x0
        self.device = torch.device(device)
        self.decoder = decoder
        self.denoiser: Callable[..., torch.Tensor] = model
        if cfg_scale != 1.0 and self.info.conditional:
            if self.info.null_label is None:
                raise AntError(
                    f"cfg scale {cfg_scale} needs a model trained with class dropout (a null "
                    "label); use a cfg scale of 1"
                )
            self.denoiser = classifier_free_guidance(
                model, cfg_scale, null_label=self.info.null_label, learn_sigma=diffusion.learn_sigma
            )

    @classmethod
    def from_settings(
        cls,
        model: nn.Module,
        diffusion: GaussianDiffusion,
        settings: SampleSettings,
        device: torch.device | str,
        decoder: SampleDecoder | None = None,
    ) -> BatchSampler:
        """A sampler with resolved ``ant sample`` / ``ant eval`` settings."""
        return cls(
            model,
            diffusion,
            sampler=settings.sampler,
            steps=settings.steps,
            eta=settings.eta,
            cfg_scale=settings.cfg_scale,
            clip_x0=settings.clip_x0,
            device=device,
            decoder=decoder,
        )

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """The ``(C, H, W)`` of one returned sample (decoded, with a decoder)."""
        shape = self.info.shape
        return shape if self.decoder is None else self.decoder.image_shape(shape)

    @property
    def num_steps(self) -> int:
        """Model evaluations per batch (the respaced process's length)."""
        return self.process.num_timesteps

    def __call__(
        self,
        indices: Sequence[int],
        labels: torch.Tensor | None,
        seed: int,
        on_step: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """Samples ``[B, C, H, W]`` on the CPU (decoded, with a decoder) for the ``indices`` given.

        ``labels`` (``[B]``) are required for a class-conditional model and must be ``None``
        for an unconditional one. ``on_step`` is called after every sampler step.
        """
        if self.info.conditional and labels is None:
            raise ValueError("a class-conditional model needs labels")
        if not self.info.conditional and labels is not None:
            raise ValueError("an unconditional model takes no labels")
        if labels is not None and tuple(labels.shape) != (len(indices),):
            raise ValueError(f"labels must have shape [{len(indices)}], got {tuple(labels.shape)}")
        noise = SampleNoise(seed, indices)
        extra = () if labels is None else (labels.to(self.device),)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                x = noise.draw(self.info.shape, self.device)
                for step in range(self.num_steps - 1, -1, -1):
                    t = torch.full((len(indices),), step, device=self.device, dtype=torch.long)
                    output = self.denoiser(x, self.process.model_timesteps(t), *extra)
                    x = self._step(output, x, t, noise)
                    if on_step is not None:
                        on_step()
                if self.decoder is not None:
                    x = self.decoder.decode(x)
        finally:
            self.model.train(was_training)
        return x.cpu()

    def sample_many(
        self,
        num: int,
        *,
        labels: torch.Tensor | None = None,
        seed: int = 0,
        batch_size: int = 64,
        progress: bool = False,
    ) -> torch.Tensor:
        """Samples 0..num-1 of ``seed``, ``batch_size`` at a time: a CPU tensor ``[num, C, H, W]``.

        ``labels`` (``[num]``) default, for a class-conditional model, to 0, 1, ...,
        num_classes-1, 0, 1, ... (a grid shows every class in order); an unconditional model
        takes none. The samples do not depend on ``batch_size`` (up to float rounding in the
        model). ``progress`` shows a bar with ETA on stderr.
        """
        if num < 1 or batch_size < 1:
            raise ValueError(f"num and batch_size must be >= 1, got {num} and {batch_size}")
        if labels is None:
            labels = class_labels(range(num), self.info.num_classes)
        elif tuple(labels.shape) != (num,):
            raise ValueError(f"labels must have shape [{num}], got {tuple(labels.shape)}")
        starts = range(0, num, batch_size)
        chunks = []
        with step_progress(len(starts) * self.num_steps, "sampling", progress) as advance:
            for start in starts:
                stop = min(start + batch_size, num)
                batch_labels = None if labels is None else labels[start:stop]
                chunks.append(self(range(start, stop), batch_labels, seed, on_step=advance))
        return torch.cat(chunks)

    def _step(
        self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, noise: SampleNoise
    ) -> torch.Tensor:
        if self.sampler == "ddpm":
            step_noise = noise.draw(self.info.shape, self.device)
            return ddpm_step(self.process, output, x, t, step_noise, clip_x0=self.clip_x0)
        maybe_noise = noise.draw(self.info.shape, self.device) if self.eta > 0 else None
        return ddim_step(
            self.process, output, x, t, maybe_noise, eta=self.eta, clip_x0=self.clip_x0
        )


def generate(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    *,
    num: int,
    labels: torch.Tensor | None = None,
    sampler: SamplerName = "ddpm",
    steps: int = 250,
    eta: float = 0.0,
    cfg_scale: float = 1.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    clip_x0: bool = False,
    progress: bool = False,
    decoder: SampleDecoder | None = None,
) -> torch.Tensor:
    """Draw samples 0..num-1 of ``seed``: a CPU tensor ``[num, C, H, W]`` in the model's space
    (images, with a ``decoder``).

    The sampler options are those of :class:`BatchSampler`, the others those of
    :meth:`BatchSampler.sample_many`.
    """
    draw = BatchSampler(
        model,
        diffusion,
        sampler=sampler,
        steps=steps,
        eta=eta,
        cfg_scale=cfg_scale,
        clip_x0=clip_x0,
        device=device,
        decoder=decoder,
    )
    return draw.sample_many(num, labels=labels, seed=seed, batch_size=batch_size, progress=progress)
