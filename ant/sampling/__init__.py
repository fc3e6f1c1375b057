"""Sampling from trained models: batched, seeded generation and writing images or arrays.

``ant sample`` (:mod:`ant.cli.sample`) draws from a checkpoint into a PNG grid or one
file per sample, sharded over torchrun ranks.
"""

from ant.sampling.arrays import save_array, save_arrays
from ant.sampling.generate import BatchSampler, generate
from ant.sampling.images import save_grid, save_images, to_uint8
from ant.sampling.labels import class_labels
from ant.sampling.loading import SamplingModel, load_sampling_model
from ant.sampling.noise import sample_seed

__all__ = [
    "BatchSampler",
    "SamplingModel",
    "class_labels",
    "generate",
    "load_sampling_model",
    "sample_seed",
    "save_array",
    "save_arrays",
    "save_grid",
    "save_images",
    "to_uint8",
]
