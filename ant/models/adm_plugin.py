"""The ADM U-Net (Dhariwal & Nichol 2021), registered as ant models by name.

==============  =====  ============  ======  =========  =======  =======  =====================
name            width  channel_mult  blocks  attention  ch/head  dropout  source
==============  =====  ============  ======  =========  =======  =======  =====================
ADM             128    by size       2       32, 16, 8  64       0.0      every option settable
ADM-ImageNet64  192    1,2,3,4       3       32, 16, 8  64       0.1      ADM ImageNet 64×64
ADM-FFHQ256     128    1,1,2,2,4,4   1       16         64       0.0      P2-weighting, 256 px
ADM-T           64     1,2           2       4          32       0.0      digits / CPU demos
ADM-Micro       32     1,2           1       4          32       0.0      unit tests
==============  =====  ============  ======  =========  =======  =======  =====================

All use BigGAN up/downsampling residual blocks (``resblock_updown``) and AdaGN
(``use_scale_shift_norm``), the ADM architecture of the paper's Sec. 3.

* ``ADM-ImageNet64`` is the class-conditional ImageNet 64×64 model of Dhariwal & Nichol 2021, with
  the flags of the guided-diffusion README (``--num_channels 192 --num_res_blocks 3
  --attention_resolutions 32,16,8 --num_head_channels 64 --dropout 0.1 --resblock_updown True
  --use_scale_shift_norm True``; channel multipliers 1, 2, 3, 4 for 64 px). With 1000 classes,
  3 input channels, learned sigma and no null label it has 295,904,454 parameters: the 295.90M of
  Karras et al. 2022 (EDM), Table 7.
* ``ADM-FFHQ256`` is the unconditional "lightweight ADM" of P2-weighting (Choi et al. 2022,
  "Perception Prioritized Training of Diffusion Models", CVPR 2022), trained on FFHQ, CelebA-HQ,
  AFHQ-dog, MetFaces, Oxford Flowers and CUB at 256 px; the flags of its README are
  ``--num_channels 128 --num_res_blocks 1 --attention_resolutions 16 --num_head_channels 64
  --dropout 0.0 --resblock_updown True --use_scale_shift_norm True`` (multipliers 1, 1, 2, 2, 4, 4
  for 256 px). It has 93,563,910 parameters with 3 channels and learned sigma; the README calls it
  "lightweight version (93M parameter) of ADM". Go et al. 2023 (ANT, Table 1) train ADM on FFHQ
  and CelebA-HQ at 256 px.

Every factory takes the :class:`~ant.models.adm.ADMUNet` options as keyword arguments (recipe keys
of the ``model`` section): ``model_channels``, ``channel_mult``, ``num_res_blocks``,
``attention_resolutions`` (in pixels), ``num_head_channels`` (``-1``: fixed ``num_heads``),
``num_heads``, ``dropout``, ``resblock_updown``, ``use_scale_shift_norm``, plus the common
``input_size``, ``in_channels``, ``num_classes``, ``class_dropout`` and ``learn_sigma``. An option
left out (``None``) takes the configuration's value from the table. ``torch`` is imported only when
a model is built, so loading the registry stays light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ant.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from ant.models.adm import ADMUNet

__all__ = ["ADM_CONFIGS", "ADMFactory"]


class ADMFactory:
    """Build an :class:`~ant.models.adm.ADMUNet` of one named configuration.

    Options passed as keyword arguments override the configuration's values; ``None`` keeps them.
    """

    def __init__(self, name: str, summary: str, **defaults: Any) -> None:
        self.name = name
        self.summary = summary
        self.defaults: Mapping[str, Any] = MappingProxyType(defaults)

    @property
    def description(self) -> str:
        """One line: the registered name, the architecture and its source."""
        return f"{self.name}: {self.summary}"

    def __repr__(self) -> str:
        return f"ADMFactory({self.name!r})"

    def __call__(
        self,
        *,
        input_size: int | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
        class_dropout: float | None = None,
        learn_sigma: bool = True,
        model_channels: int | None = None,
        channel_mult: Sequence[float] | None = None,
        num_res_blocks: int | None = None,
        attention_resolutions: Sequence[int] | None = None,
        num_head_channels: int | None = None,
        num_heads: int | None = None,
        dropout: float | None = None,
        resblock_updown: bool | None = None,
        use_scale_shift_norm: bool | None = None,
    ) -> ADMUNet:
        """A freshly initialised ADM U-Net of this configuration with the given overrides."""
        from ant.models.adm import ADMUNet

        given = {
            "input_size": input_size,
            "in_channels": in_channels,
            "num_classes": num_classes,
            "class_dropout": class_dropout,
            "model_channels": model_channels,
            "channel_mult": channel_mult,
            "num_res_blocks": num_res_blocks,
            "attention_resolutions": attention_resolutions,
            "num_head_channels": num_head_channels,
            "num_heads": num_heads,
            "dropout": dropout,
            "resblock_updown": resblock_updown,
            "use_scale_shift_norm": use_scale_shift_norm,
        }
        options = {**self.defaults, **{k: v for k, v in given.items() if v is not None}}
        for key in ("channel_mult", "attention_resolutions"):
            options[key] = _number_list(key, options[key])
        return ADMUNet(learn_sigma=learn_sigma, **options)


def _number_list(key: str, value: Any) -> tuple[float, ...] | None:
    """A sequence option as a tuple; a string such as ``"32,16,8"`` (guided-diffusion's flag
    syntax) is split on commas."""
    if value is None:
        return None
    parts: list[Any]
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, int | float):
        parts = [value]
    else:
        parts = list(value)
    try:
        numbers = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a list of numbers, got {value!r}") from None
    return tuple(int(n) if n.is_integer() else n for n in numbers)


COMMON = {"resblock_updown": True, "use_scale_shift_norm": True, "num_heads": 4}

ADM_CONFIGS: dict[str, ADMFactory] = {
    factory.name: factory
    for factory in (
        ADMFactory(
            "ADM",
            "ADM U-Net with every option settable; default width 128, 2 blocks per level, "
            "attention at 32/16/8 px, 64 channels per head (Dhariwal & Nichol 2021)",
            input_size=64,
            in_channels=3,
            num_classes=1000,
            class_dropout=0.1,
            model_channels=128,
            channel_mult=None,
            num_res_blocks=2,
            attention_resolutions=(32, 16, 8),
            num_head_channels=64,
            dropout=0.0,
            **COMMON,
        ),
        ADMFactory(
            "ADM-ImageNet64",
            "ADM U-Net of ImageNet 64x64: width 192, mult 1-2-3-4, 3 blocks per level, "
            "attention at 32/16/8 px, dropout 0.1, 295.9M params (Dhariwal & Nichol 2021)",
            input_size=64,
            in_channels=3,
            num_classes=1000,
            class_dropout=0.1,
            model_channels=192,
            channel_mult=(1, 2, 3, 4),
            num_res_blocks=3,
            attention_resolutions=(32, 16, 8),
            num_head_channels=64,
            dropout=0.1,
            **COMMON,
        ),
        ADMFactory(
            "ADM-FFHQ256",
            "lightweight ADM U-Net of P2-weighting at 256 px, unconditional: width 128, "
            "mult 1-1-2-2-4-4, 1 block per level, attention at 16 px, 93.6M params "
            "(Choi et al. 2022)",
            input_size=256,
            in_channels=3,
            num_classes=0,
            class_dropout=0.0,
            model_channels=128,
            channel_mult=(1, 1, 2, 2, 4, 4),
            num_res_blocks=1,
            attention_resolutions=(16,),
            num_head_channels=64,
            dropout=0.0,
            **COMMON,
        ),
        ADMFactory(
            "ADM-T",
            "tiny ADM U-Net for 8x8 digits and CPU demos: width 64, mult 1-2, 2 blocks per "
            "level, attention at 4 px (small ant config after Dhariwal & Nichol 2021)",
            input_size=8,
            in_channels=1,
            num_classes=10,
            class_dropout=0.1,
            model_channels=64,
            channel_mult=(1, 2),
            num_res_blocks=2,
            attention_resolutions=(4,),
            num_head_channels=32,
            dropout=0.0,
            **COMMON,
        ),
        ADMFactory(
            "ADM-Micro",
            "micro ADM U-Net for unit tests: width 32, mult 1-2, 1 block per level, attention "
            "at 4 px (small ant config after Dhariwal & Nichol 2021)",
            input_size=8,
            in_channels=1,
            num_classes=10,
            class_dropout=0.1,
            model_channels=32,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attention_resolutions=(4,),
            num_head_channels=32,
            dropout=0.0,
            **COMMON,
        ),
    )
}


@hookimpl
def ant_register_models(register: Any) -> None:
    """Register every named ADM configuration."""
    for name, factory in ADM_CONFIGS.items():
        register(name, factory, factory.description)
