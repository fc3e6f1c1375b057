"""Known answers for the per-timestep loss weightings: Min-SNR, P2, debiased, EDM2 uncertainty."""

from __future__ import annotations

import math

import pytest
import torch

from ant.diffusion import GaussianDiffusion
from ant.diffusion.schedules import snr as snr_of
from ant.methods.debias import Debias, debias_eps_weight
from ant.methods.edm2 import EDM2Uncertainty, noise_conditioning, uncertainty_loss
from ant.methods.minsnr import MinSNR, min_snr_weight
from ant.methods.p2 import P2, p2_eps_weight
from ant.methods.snr_weighting import TabulatedWeighting, eps_to_prediction_weight

INF = math.inf
SNRS = torch.tensor([0.0, 0.5, 5.0, 20.0, INF], dtype=torch.float64)


def diffusion(prediction: str = "eps", schedule: str = "linear") -> GaussianDiffusion:
    return GaussianDiffusion.from_schedule(schedule, 1000, prediction_type=prediction)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("eps", [1.0, 1.0, 1.0, 0.25, 0.0]),
        ("v", [0.0, 0.5 / 1.5, 5.0 / 6.0, 5.0 / 21.0, 0.0]),
        ("x0", [0.0, 0.5, 5.0, 5.0, 5.0]),
    ],
)
def test_min_snr_weight_at_known_snrs(prediction: str, expected: list[float]) -> None:
    weight = min_snr_weight(SNRS, 5.0, prediction)  # type: ignore[arg-type]
    assert torch.isfinite(weight).all()
    assert torch.allclose(weight, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_min_snr_is_the_same_eps_weight_for_every_prediction(prediction: str) -> None:
    snr = torch.tensor([0.01, 0.5, 5.0, 20.0, 1e4], dtype=torch.float64)
    eps = min_snr_weight(snr, 5.0, "eps")
    converted = eps_to_prediction_weight(eps, snr, prediction)  # type: ignore[arg-type]
    assert torch.allclose(converted, min_snr_weight(snr, 5.0, prediction))  # type: ignore[arg-type]


def test_loss_relations_between_prediction_types() -> None:
    torch.manual_seed(0)
    abar = torch.tensor(0.3, dtype=torch.float64)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    snr = abar / (1 - abar)
    x0, eps = torch.randn(64, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
    x_t = alpha * x0 + sigma * eps
    pred_eps = eps + 0.1 * torch.randn(64, dtype=torch.float64)
    pred_x0 = (x_t - sigma * pred_eps) / alpha
    pred_v = alpha * pred_eps - sigma * pred_x0
    eps_loss = (pred_eps - eps).pow(2).mean()
    x0_loss = (pred_x0 - x0).pow(2).mean()
    v_loss = (pred_v - (alpha * eps - sigma * x0)).pow(2).mean()
    w = torch.tensor(0.7, dtype=torch.float64)
    for prediction, loss in (("x0", x0_loss), ("v", v_loss)):
        weighted = eps_to_prediction_weight(w, snr, prediction) * loss  # type: ignore[arg-type]
        assert torch.allclose(weighted, w * eps_loss)


def test_p2_weight_at_known_snrs() -> None:
    snr = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    assert torch.allclose(p2_eps_weight(snr, 1.0, 1.0), torch.tensor([1.0, 0.5, 0.25]).double())
    assert torch.allclose(p2_eps_weight(snr, 1.0, 0.5), torch.tensor([1.0, 0.5**0.5, 0.5]).double())
    assert torch.allclose(p2_eps_weight(snr, 2.0, 1.0), torch.tensor([0.5, 1 / 3, 0.2]).double())


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_p2_table_follows_the_prediction_type(prediction: str) -> None:
    process = diffusion(prediction)
    weighting = P2(gamma=0.5)
    weighting.bind(process)
    snr = snr_of(process.alphas_cumprod)
    eps = 1.0 / (1.0 + snr).sqrt()
    factor = {"eps": torch.ones_like(snr), "x0": snr, "v": snr / (1 + snr)}[prediction]
    assert torch.allclose(weighting.weights.double(), eps * factor, rtol=1e-6)


def test_debias_weight_and_its_guard() -> None:
    snr = torch.tensor([0.0, 1e-9, 1e-6, 0.25, 4.0, INF], dtype=torch.float64)
    weight = debias_eps_weight(snr, 1000.0)
    assert torch.isfinite(weight).all()
    expected = torch.tensor([1000.0, 1000.0, 1000.0, 2.0, 0.5, 0.0], dtype=torch.float64)
    assert torch.allclose(weight, expected)


def test_debias_cap_touches_only_the_last_cosine_step() -> None:
    for schedule, capped in (("linear", 0), ("cosine", 1)):
        process = diffusion("eps", schedule)
        weighting = Debias()
        weighting.bind(process)
        uncapped = snr_of(process.alphas_cumprod).rsqrt()
        assert int((uncapped > 1000.0).sum()) == capped
        assert float(weighting.weights.max()) <= 1000.0
        assert torch.allclose(weighting.weights.double(), uncapped.clamp(max=1000.0), rtol=1e-6)


def test_debias_on_x0_is_sqrt_snr() -> None:
    process = diffusion("x0")
    weighting = Debias()
    weighting.bind(process)
    expected = snr_of(process.alphas_cumprod).sqrt()
    assert torch.allclose(weighting.weights.double(), expected, rtol=1e-6)


@pytest.mark.parametrize("factory", [MinSNR, P2, Debias])
def test_tabulated_weight_is_one_gather(factory: type[TabulatedWeighting]) -> None:
    weighting = factory()
    weighting.bind(diffusion("v"))
    t = torch.tensor([0, 10, 999, 10])
    mse = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.equal(weighting(mse, t), weighting.weights[t] * mse)
    assert "weights" not in weighting.state_dict()
    assert not list(weighting.parameters())


def test_table_moves_with_the_module_before_and_after_bind() -> None:
    after = MinSNR()
    after.bind(diffusion())
    after.to(torch.device("cpu"), torch.float64)
    assert after.weights.dtype == torch.float64 and after.weights.shape == (1000,)
    before = MinSNR().to(torch.device("cpu"), torch.float64)
    before.bind(diffusion())
    assert before.weights.dtype == torch.float64
    assert torch.allclose(before.weights, after.weights)
    edm2 = EDM2Uncertainty(channels=8)
    edm2.bind(diffusion())
    edm2.to(torch.device("cpu"), torch.float64)
    assert edm2.c_noise.dtype == torch.float64
    assert edm2(torch.ones(2, dtype=torch.float64), torch.tensor([0, 1])).dtype == torch.float64


def test_weighting_before_bind_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="bind"):
        MinSNR()(torch.ones(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(RuntimeError, match="bind"):
        EDM2Uncertainty()(torch.ones(2), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize(
    ("factory", "options"),
    [(MinSNR, {"gamma": 0.0}), (P2, {"k": 0.0}), (Debias, {"max_weight": -1.0})],
)
def test_invalid_options_are_rejected(factory: type, options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        factory(**options)


def test_uncertainty_loss_minimum_is_log_of_the_loss() -> None:
    mse = torch.tensor([0.2, 2.0])
    u = torch.log(mse).requires_grad_()
    uncertainty_loss(mse, u).sum().backward()
    assert u.grad is not None and torch.allclose(u.grad, torch.zeros(2), atol=1e-6)


def test_noise_conditioning_is_a_quarter_of_log_sigma() -> None:
    log_snr = torch.tensor([-4.0, 0.0, 8.0])
    sigma = torch.exp(-log_snr / 2)
    assert torch.allclose(noise_conditioning(log_snr), torch.log(sigma) / 4)


def test_edm2_uncertainty_learns_the_log_of_the_loss_profile() -> None:
    process = diffusion()
    weighting = EDM2Uncertainty(channels=64)
    weighting.bind(process)
    t = torch.tensor([0, 250, 500, 750, 999])
    profile = torch.tensor([0.05, 0.2, 0.5, 1.0, 3.0])
    (group,) = weighting.param_groups()
    assert group["weight_decay"] == 0.0 and "lr" not in group
    optimizer = torch.optim.Adam(group["params"], lr=0.02)
    for _ in range(500):
        optimizer.zero_grad()
        weighting(profile, t).mean().backward()
        optimizer.step()
    with torch.no_grad():
        learned = weighting.log_variance(t).exp()
    assert torch.allclose(learned, profile, rtol=0.05)
    assert torch.allclose(weighting.metrics()["u_mean"], torch.log(learned).mean(), atol=0.05)


def test_edm2_uncertainty_starts_unweighted_with_its_own_lr_group() -> None:
    weighting = EDM2Uncertainty(channels=16, lr=1e-3)
    weighting.bind(diffusion())
    mse = torch.tensor([0.3, 0.7])
    assert torch.allclose(weighting(mse, torch.tensor([3, 900])), mse)
    (group,) = weighting.param_groups()
    assert group["lr"] == 1e-3
    assert sum(p.numel() for p in group["params"]) == 17
    assert set(weighting.state_dict()) == {"frequencies", "phases", "linear.weight", "linear.bias"}
