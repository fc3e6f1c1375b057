"""The typed recipe schema: one section per part of a run, each with sensible defaults.

Sections that select a plugin (``model``, ``clustering``, ``method``, ``weighting``) also accept
the options of the chosen component; those are checked against the component's own signature by
:func:`ant.recipe.validate.check_plugins`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """A recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginSection(BaseModel):
    """A section that selects a plugin component; extra keys are that component's options."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)


class RoutingConfig(Section):
    """Denoising Task Routing (Park et al. 2024): a fixed channel mask per timestep."""

    ratio: float = Field(
        0.8, gt=0.0, le=1.0, description="share of the hidden channels each timestep uses"
    )
    alpha: float = Field(
        4.0, gt=0.0, description="the window slides as (t / (T - 1))^alpha over the channels"
    )


class ModelConfig(PluginSection):
    """The denoising network (a ``model`` plugin) and the shape of its input."""

    name: str = Field(
        "DiT-S/2", description="registered model name, see `ant plugins --kind model`"
    )
    input_size: int = Field(32, ge=1, description="spatial size of the (latent) input")
    in_channels: int = Field(4, ge=1, description="channels of the (latent) input")
    num_classes: int = Field(1000, ge=0, description="number of classes; 0 = unconditional")
    class_dropout: float = Field(0.1, ge=0.0, le=1.0, description="label dropout for CFG")
    init_from: str | None = Field(
        None,
        description="initialise the model and EMA before step 0 from an ant run or checkpoint, "
        "a DiT or an ADM (guided-diffusion) checkpoint (docs/training.md)",
    )
    init_strict: bool = Field(
        True, description="refuse a checkpoint whose keys or shapes differ; false: load what fits"
    )
    routing: RoutingConfig | None = Field(
        None,
        description="Denoising Task Routing, e.g. {ratio: 0.8, alpha: 4.0}; null: none "
        "(docs/models.md)",
    )
    init_format: Literal["auto", "ant", "dit", "adm", "adm-new-attention"] = Field(
        "auto",
        description="layout of init_from; adm-new-attention: guided-diffusion's "
        "use_new_attention_order",
    )


class DiffusionConfig(Section):
    """The Gaussian diffusion process."""

    timesteps: int = Field(1000, ge=2, description="number of diffusion steps T")
    schedule: Literal["linear", "cosine"] = "linear"
    prediction: Literal["eps", "v", "x0"] = "eps"
    learn_sigma: bool = Field(True, description="learned variance with the hybrid loss")


class DataConfig(Section):
    """Where training samples come from and how they are streamed."""

    shards: str | None = Field(None, description="shard directory, brace pattern or URL")
    hflip: bool = False
    resampled: bool = True
    epoch_samples: int | None = Field(None, ge=1, description="samples per epoch (all ranks)")
    shuffle_buffer: int = Field(1000, ge=0)
    num_workers: int = Field(2, ge=0)
    skip_corrupt: bool = False


class VaeConfig(Section):
    """The VAE of latent diffusion (docs/latent.md): unset ``name_or_path`` = pixel space.

    The model then works on latents: ``model.in_channels`` is the VAE's latent channels and
    ``model.input_size`` the image size over its downsampling factor (8 for Stable Diffusion's).
    """

    name_or_path: str | None = Field(
        None,
        description="local AutoencoderKL folder (save_pretrained) or a hub name in the local "
        "Hugging Face cache, e.g. stabilityai/sd-vae-ft-ema; null = no VAE (pixel space)",
    )
    subfolder: str | None = Field(None, description="the VAE's sub-folder, e.g. vae")
    scale: float | None = Field(
        None, gt=0.0, description="latent scale factor; null = the VAE config's scaling_factor"
    )
    encode: Literal["offline", "online"] = Field(
        "offline",
        description="offline: data.shards hold latents from `ant data encode`; online: they hold "
        "images, encoded by the VAE before every step",
    )
    posterior: Literal["sample", "mean"] = Field(
        "sample", description="online encoding: draw from the VAE posterior, or take its mean"
    )
    precision: Literal["fp32", "bf16"] = Field("fp32", description="VAE weights and activations")


class ClusteringConfig(PluginSection):
    """How the T timesteps are grouped into k task clusters (a clustering ``objective``)."""

    objective: str = "uniform"
    k: int = Field(5, ge=1, description="number of timestep clusters")
    sampling: Literal["stratified", "proportional", "uniform"] = Field(
        "stratified",
        description="timesteps per batch: B/k per cluster (stratified), chunks proportional "
        "to the cluster widths (proportional: uniform over t), or uniform (docs/clustering.md)",
    )
    affinity: str | None = Field(None, description="task-affinity matrix (.npy)")


class MethodConfig(PluginSection):
    """The multi-task or loss-weighting method across clusters (a ``method`` plugin)."""

    name: str = "vanilla"


class WeightingConfig(PluginSection):
    """A per-timestep loss weighting inside the clusters (a timestep-weighting ``method``).

    ``none`` leaves the denoising loss unweighted; e.g. ``name: minsnr`` with ``method.name: uw``
    is Min-SNR inside clusters and Uncertainty Weighting across them.
    """

    name: str = "none"


class OptimConfig(Section):
    """The optimizer of the model parameters."""

    name: Literal["adamw"] = "adamw"
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    grad_clip: float | None = Field(None, gt=0.0, description="max gradient norm; null = off")
    schedule: Literal["constant", "cosine", "linear", "inverse_sqrt"] = Field(
        "constant", description="learning-rate schedule after the warmup (docs/training.md)"
    )
    warmup_steps: int = Field(0, ge=0, description="linear warmup from lr/warmup_steps to lr")
    min_lr: float = Field(0.0, ge=0.0, description="the rate cosine and linear decay to")
    decay_steps: int | None = Field(
        None, ge=1, description="steps over which cosine and linear decay; null = train.steps"
    )
    schedule_method_params: bool = Field(
        False,
        description="schedule the method's and weighting's own parameters too (UW's log "
        "variances); off: they keep their constant rate",
    )

    @model_validator(mode="after")
    def _min_below_lr(self) -> OptimConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr:g} is above lr {self.lr:g}: lower min_lr")
        return self


class LoggerConfig(PluginSection):
    """One entry of ``train.loggers`` with options: a ``logger`` plugin and its keys."""

    name: str


class TrainConfig(Section):
    """The training loop."""

    steps: int = Field(400_000, ge=1)
    global_batch_size: int = Field(256, ge=1)
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    tf32: bool = True
    compile: bool = False
    ema_decay: float = Field(0.9999, ge=0.0, le=1.0)
    log_every: int = Field(100, ge=1)
    ckpt_every: int = Field(10_000, ge=1)
    sample_every: int | None = Field(None, ge=1)
    run_dir: str | None = Field(None, description="default: runs/<recipe name>")
    task_grads: Literal["grouped", "vmap", "backward"] = Field(
        "grouped",
        description="per-cluster gradients: one grouped backward pass, one vmap pass, or k passes",
    )
    task_grads_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="dtype of the [k, P] buffer of grouped per-cluster gradients"
    )
    grad_accum: int = Field(
        1, ge=1, description="micro-batches per optimizer step (each rank's batch split N ways)"
    )
    conflict_every: int | None = Field(
        None, ge=1, description="log the per-cluster gradient cosines every N steps, any method"
    )
    timestep_range: tuple[int, int] | None = Field(
        None, description="train only on timesteps a..b (inclusive), for interval-specific models"
    )
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop",
        description="a NaN/inf loss or gradient: stop (nothing non-finite is saved), or skip "
        "that update",
    )
    nonfinite_patience: int = Field(
        20, ge=1, description="consecutive skipped updates (skip, or fp16's GradScaler) that stop"
    )
    loggers: list[str | LoggerConfig] = Field(
        default_factory=lambda: list[str | LoggerConfig](["jsonl", "tensorboard"]),
        description="where rank 0 logs (`ant plugins --kind logger`): names, or {name: ..., "
        "option: ...} entries; jsonl feeds `ant runs` and `ant reproduce`",
    )


class SampleConfig(Section):
    """Sampling settings used by `ant sample` and periodic sample grids."""

    sampler: Literal["ddpm", "ddim"] = "ddpm"
    steps: int = Field(250, ge=2, description="sampler steps (respaced; capped at T)")
    eta: float = Field(0.0, ge=0.0)
    cfg_scale: float = Field(1.0, ge=0.0)
    clip_x0: bool = Field(True, description="clip predicted x0 to [-1, 1]; off for latents")
    num: int = Field(64, ge=1)
    seed: int = 0


class EvalConfig(Section):
    """Evaluation settings used by `ant eval` and evaluations during training."""

    metrics: list[str] = Field(default_factory=lambda: ["fid"])
    num_samples: int = Field(50_000, ge=1)
    ref: str | None = None
    feature_extractor: str = "inception"
    weights: str | None = Field(
        None, description="feature-extractor weights file; default: the torch hub cache"
    )
    batch_size: int = Field(64, ge=1)
    every: int | None = Field(None, ge=1)


class Recipe(Section):
    """A whole training recipe."""

    name: str = Field("recipe", description="run name; defaults to the recipe file's stem")
    description: str = ""
    model: ModelConfig = Field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    vae: VaeConfig = Field(default_factory=VaeConfig)
    clustering: ClusteringConfig = Field(default_factory=ClusteringConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    weighting: WeightingConfig = Field(default_factory=WeightingConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
