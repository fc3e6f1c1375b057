"""Normal KL and the discretized Gaussian decoder likelihood against known values."""

from __future__ import annotations

import math

import pytest
import torch

from ant.diffusion.losses import (
    discretized_gaussian_log_likelihood,
    mean_flat,
    mse_per_sample,
    normal_kl,
    vlb_bits_per_sample,
)

BIN_CENTRES = torch.linspace(-1.0, 1.0, 256, dtype=torch.float64)


def _scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


def test_kl_of_identical_gaussians_is_zero() -> None:
    mean = torch.randn(5, dtype=torch.float64)
    logvar = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(normal_kl(mean, logvar, mean, logvar), torch.zeros(5).double())


def test_kl_known_values() -> None:
    zero = _scalar(0.0)
    assert normal_kl(zero, zero, _scalar(1.0), zero).item() == pytest.approx(0.5)
    s1, s2 = 0.5, 2.0
    expected = math.log(s2 / s1) + s1**2 / (2 * s2**2) - 0.5
    kl = normal_kl(zero, _scalar(2 * math.log(s1)), zero, _scalar(2 * math.log(s2)))
    assert kl.item() == pytest.approx(expected, rel=1e-12)


def test_kl_broadcasts_a_per_sample_variance() -> None:
    mean1 = torch.zeros(3, 2, 4, 4)
    logvar = torch.zeros(3, 1, 1, 1)
    kl = normal_kl(mean1, logvar, mean1 + 1.0, logvar)
    assert kl.shape == (3, 2, 4, 4)
    torch.testing.assert_close(mean_flat(kl), torch.full((3,), 0.5))


def test_discretized_likelihood_of_a_narrow_gaussian_at_a_bin_centre_is_one() -> None:
    log_scale = torch.full_like(BIN_CENTRES, math.log(1e-4))
    log_p = discretized_gaussian_log_likelihood(BIN_CENTRES, BIN_CENTRES, log_scale)
    torch.testing.assert_close(log_p, torch.zeros_like(log_p), atol=1e-9, rtol=0.0)


@pytest.mark.parametrize(("mean", "scale"), [(0.0, 1.0), (0.3, 0.05), (-0.97, 0.2), (2.5, 0.4)])
def test_discretized_probabilities_sum_to_one(mean: float, scale: float) -> None:
    means = torch.full_like(BIN_CENTRES, mean)
    log_scale = torch.full_like(BIN_CENTRES, math.log(scale))
    probs = discretized_gaussian_log_likelihood(BIN_CENTRES, means, log_scale).exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_likelihood_known_inner_and_edge_values() -> None:
    half = 1.0 / 255
    log_p = discretized_gaussian_log_likelihood(
        torch.tensor([0.0, -1.0, 1.0], dtype=torch.float64),
        torch.zeros(3, dtype=torch.float64),
        torch.zeros(3, dtype=torch.float64),
    )
    inner = math.erf(half / math.sqrt(2))
    edge = 0.5 * math.erfc((1 - half) / math.sqrt(2))
    torch.testing.assert_close(
        log_p, torch.tensor([math.log(inner), math.log(edge), math.log(edge)]).double()
    )


def test_discretized_likelihood_is_accurate_in_the_far_tail() -> None:
    # The bins at x = +-0.3 under N(0, 0.05^2), 6 standard deviations out (probability ~1e-9):
    # a plain difference of two CDFs close to 1 would be lost to float32 rounding on the right.
    x = torch.tensor([0.3, -0.3], dtype=torch.float32)
    log_p = discretized_gaussian_log_likelihood(
        x, torch.zeros(2), torch.log(torch.full((2,), 0.05))
    )
    z_lo, z_hi = (0.3 - 1 / 255) / 0.05, (0.3 + 1 / 255) / 0.05
    expected = math.log(0.5 * (math.erfc(z_lo / math.sqrt(2)) - math.erfc(z_hi / math.sqrt(2))))
    torch.testing.assert_close(log_p, torch.tensor([expected, expected]), rtol=1e-4, atol=0.0)


def test_per_sample_shapes() -> None:
    x = torch.randn(4, 3, 8, 8)
    assert mse_per_sample(x, torch.zeros_like(x)).shape == (4,)
    torch.testing.assert_close(mse_per_sample(x, x), torch.zeros(4))


def test_vlb_bits_selects_decoder_nll_at_the_first_step() -> None:
    x0 = torch.tensor([[0.0], [0.0]], dtype=torch.float64)
    zeros = torch.zeros_like(x0)
    ones = torch.ones_like(x0)
    bits = vlb_bits_per_sample(x0, zeros, zeros, ones, zeros, torch.tensor([False, True]))
    assert bits[0].item() == pytest.approx(0.5 / math.log(2))
    nll = -discretized_gaussian_log_likelihood(x0[1], ones[1], zeros[1]).item()
    assert bits[1].item() == pytest.approx(nll / math.log(2))
