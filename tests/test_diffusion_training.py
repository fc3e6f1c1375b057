"""Per-sample training losses: simple MSE, the hybrid loss and its stop-gradient."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ant.diffusion import PREDICTION_TYPES, GaussianDiffusion
from ant.diffusion.losses import discretized_gaussian_log_likelihood

B, C, H, W = 5, 2, 4, 4


def _batch(
    diffusion: GaussianDiffusion, t: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x0 = torch.rand(len(t), C, H, W, generator=generator) * 2 - 1
    noise = torch.randn(len(t), C, H, W, generator=generator)
    steps = torch.tensor(t)
    return x0, noise, steps, diffusion.q_sample(x0, steps, noise)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("learn_sigma", [False, True])
def test_perfect_prediction_has_zero_simple_loss(prediction_type: str, learn_sigma: bool) -> None:
    diffusion = GaussianDiffusion.from_schedule(
        "cosine",
        prediction_type=prediction_type,  # type: ignore[arg-type]
        learn_sigma=learn_sigma,
    )
    x0, noise, t, x_t = _batch(diffusion, [0, 3, 250, 700, 999])
    target = diffusion.training_target(x0, noise, t)
    output = torch.cat([target, torch.zeros_like(target)], dim=1) if learn_sigma else target
    losses = diffusion.training_losses(output, x0, x_t, t, noise)
    assert losses.loss.shape == (B,)
    assert losses.mse.shape == (B,)
    torch.testing.assert_close(losses.mse, torch.zeros(B))
    if learn_sigma:
        assert losses.vb is not None and losses.vb.shape == (B,)
        torch.testing.assert_close(losses.loss, losses.mse + losses.vb)
    else:
        assert losses.vb is None
        assert losses.loss is losses.mse


def test_simple_loss_is_the_mean_squared_error_per_sample() -> None:
    diffusion = GaussianDiffusion.from_schedule("linear")
    x0, noise, t, x_t = _batch(diffusion, [1, 2, 3, 4, 5])
    offsets = torch.arange(B, dtype=torch.float32).view(-1, 1, 1, 1)
    losses = diffusion.training_losses(noise + offsets, x0, x_t, t, noise)
    torch.testing.assert_close(losses.loss, offsets.flatten() ** 2)


def test_vb_vanishes_for_the_true_posterior() -> None:
    # eps-prediction equal to the noise gives the true posterior mean; the variance fraction
    # v = 0 (output -1) gives the clipped log beta-tilde, which is exact for t > 0.
    diffusion = GaussianDiffusion.from_schedule("linear", learn_sigma=True)
    x0, noise, t, x_t = _batch(diffusion, [1, 10, 100, 500, 999])
    output = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    losses = diffusion.training_losses(output, x0, x_t, t, noise)
    assert losses.vb is not None
    torch.testing.assert_close(losses.vb, torch.zeros(B), atol=2e-5, rtol=0.0)


def test_vb_at_t0_is_the_decoder_nll_in_bits() -> None:
    diffusion = GaussianDiffusion.from_schedule("linear", learn_sigma=True)
    x0, noise, t, x_t = _batch(diffusion, [0, 0, 0, 0, 0])
    var_values = torch.full_like(noise, 0.3)
    losses = diffusion.training_losses(torch.cat([noise, var_values], 1), x0, x_t, t, noise)
    # At t = 0 the model mean is the posterior mean at the predicted x0, which is x0 itself; the
    # output 0.3 is the fraction v = 0.65 between log beta-tilde_1 (clipped) and log beta_0.
    abar = diffusion.alphas_cumprod
    beta_tilde_1 = diffusion.betas[1] * (1 - abar[0]) / (1 - abar[1])
    log_var = 0.65 * math.log(diffusion.betas[0]) + 0.35 * math.log(beta_tilde_1)
    nll = -discretized_gaussian_log_likelihood(x0, x0, torch.full_like(x0, 0.5 * log_var))
    expected = nll.flatten(1).mean(1) / math.log(2)
    assert losses.vb is not None
    torch.testing.assert_close(losses.vb, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_vb_trains_only_the_variance_channels(prediction_type: str) -> None:
    diffusion = GaussianDiffusion.from_schedule(
        "cosine",
        prediction_type=prediction_type,  # type: ignore[arg-type]
        learn_sigma=True,
    )
    x0, noise, t, x_t = _batch(diffusion, [0, 5, 300, 600, 990])
    output = torch.randn(B, 2 * C, H, W, generator=torch.Generator().manual_seed(2))
    output.requires_grad_(True)
    losses = diffusion.training_losses(output, x0, x_t, t, noise)
    assert losses.vb is not None
    (vb_grad,) = torch.autograd.grad(losses.vb.sum(), output, retain_graph=True)
    assert torch.count_nonzero(vb_grad[:, :C]) == 0
    assert torch.count_nonzero(vb_grad[:, C:]) > 0
    (mse_grad,) = torch.autograd.grad(losses.mse.sum(), output)
    assert torch.count_nonzero(mse_grad[:, C:]) == 0
    assert torch.count_nonzero(mse_grad[:, :C]) > 0


def test_output_channels_are_checked() -> None:
    diffusion = GaussianDiffusion.from_schedule("linear", learn_sigma=True)
    x0, noise, t, x_t = _batch(diffusion, [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="expected 4 channels"):
        diffusion.training_losses(noise, x0, x_t, t, noise)


class _TinyDenoiser(nn.Module):
    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels + 1, out_channels, 3, padding=1)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.seen.append(t)
        level = (t.float() / 1000 + y.float()).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return self.conv(torch.cat([x, level], dim=1))


def test_model_losses_feed_the_model_original_timesteps_and_backpropagate() -> None:
    diffusion = GaussianDiffusion.from_schedule("linear", learn_sigma=True).respaced(10)
    model = _TinyDenoiser(C, 2 * C)
    x0 = torch.rand(B, C, H, W) * 2 - 1
    t = torch.tensor([0, 1, 5, 8, 9])
    generator = torch.Generator().manual_seed(3)
    losses = diffusion.model_losses(
        model, x0, t, model_kwargs={"y": torch.zeros(B, dtype=torch.long)}, generator=generator
    )
    assert model.seen[0].tolist() == [0, 111, 555, 888, 999]
    assert losses.loss.shape == (B,)
    losses.loss.mean().backward()
    assert model.conv.weight.grad is not None
    assert bool(torch.isfinite(model.conv.weight.grad).all())
