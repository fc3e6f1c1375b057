"""Every registered model is a Denoiser: the attributes sampling reads and the output shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ant.core.plugins import registry
from ant.models.denoiser import Denoiser, missing_members
from ant.sampling.model_info import ModelInfo

# Each model on the meta device: no memory for DiT-XL/2's 675M parameters, shapes still checked.
SIZE = 32


@pytest.mark.parametrize("name", registry("model").names())
@pytest.mark.parametrize(("num_classes", "learn_sigma"), [(10, True), (0, False)])
def test_every_registered_model_is_a_denoiser(
    name: str, num_classes: int, learn_sigma: bool
) -> None:
    with torch.device("meta"):
        model = registry("model").build(
            name,
            input_size=SIZE,
            in_channels=3,
            num_classes=num_classes,
            class_dropout=0.1,
            learn_sigma=learn_sigma,
        )
        x = torch.empty(2, 3, SIZE, SIZE)
        t = torch.tensor([0, 999])
        y = torch.tensor([1, 2]) if num_classes else None
        out = model(x, t, y)
    assert isinstance(model, nn.Module) and isinstance(model, Denoiser)
    assert missing_members(model) == []
    assert (model.in_channels, model.input_size, model.num_classes) == (3, SIZE, num_classes)
    assert model.learn_sigma is learn_sigma
    assert model.out_channels == (6 if learn_sigma else 3)
    assert out.shape == (2, model.out_channels, SIZE, SIZE)
    info = ModelInfo.of(model)
    assert info.shape == (3, SIZE, SIZE) and info.conditional == bool(num_classes)
    assert info.null_label == (num_classes if num_classes else None)


def test_a_module_that_is_no_denoiser_is_named_with_what_it_lacks() -> None:
    with pytest.raises(ValueError, match=r"Linear is not a Denoiser.*in_channels.*null_label"):
        ModelInfo.of(nn.Linear(2, 2))
