"""Mixing measures against processes whose autocorrelation is known in closed form."""

import pytest
import torch

from qidbm.metrics.mixing import autocorrelation, class_switches, integrated_autocorrelation_time


def ar1(rho: float, steps: int, chains: int, seed: int = 0) -> torch.Tensor:
    """x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t, started stationary: autocorrelation rho^t, tau = (1+rho)/(1-rho)."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(steps, chains, generator=g, dtype=torch.float64)
    x = torch.empty_like(e)
    x[0] = e[0]
    for t in range(1, steps):
        x[t] = rho * x[t - 1] + (1 - rho**2) ** 0.5 * e[t]
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ar1_integrated_time_matches_closed_form(rho):
    tau = integrated_autocorrelation_time(ar1(rho, 4000, 64))
    assert tau == pytest.approx((1 + rho) / (1 - rho), rel=0.06)


def test_autocorrelation_follows_rho_to_the_t():
    r = autocorrelation(ar1(0.8, 4000, 64, seed=1))
    assert r[0] == 1.0
    for t in range(1, 6):
        assert float(r[t]) == pytest.approx(0.8**t, abs=0.02)


def test_slower_chain_has_longer_time():
    assert integrated_autocorrelation_time(ar1(0.95, 4000, 32)) > 3 * integrated_autocorrelation_time(ar1(0.7, 4000, 32))


def test_class_switches_count_changes_per_thousand_sweeps():
    labels = torch.tensor([[1, 2], [1, 2], [3, 2], [3, 4], [1, 4]])   # 4 steps x 2 chains: 3 changes of 8
    assert class_switches(labels) == pytest.approx(3 / 8 * 1000)
    assert class_switches(labels, sweeps_per_record=10) == pytest.approx(3 / 8 * 100)


def test_bad_shapes_and_constant_chains_are_clear_errors():
    with pytest.raises(ValueError, match="T >= 2"):
        autocorrelation(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="constant"):
        integrated_autocorrelation_time(torch.ones(10, 3))
    with pytest.raises(ValueError, match="T >= 2"):
        class_switches(torch.zeros(5))
