"""Blocking error bars against the exact variance of the mean of AR(1) series."""

import numpy as np
import pytest
from scipy.signal import lfilter

from qidbm.nqs import blocking, blocking_chains


def _ar1(phi, n, rng):
    """Stationary AR(1): x_t = phi x_{t-1} + eps_t, eps ~ N(0, 1), x_0 drawn from the stationary law."""
    x0 = rng.standard_normal() / np.sqrt(1 - phi**2)
    return lfilter([1.0], [1.0, -phi], rng.standard_normal(n), zi=[phi * x0])[0]


def _exact_error(phi, n):
    """sqrt Var(mean) = sqrt( (s_x^2 / n) [1 + 2 sum_{k<n} (1 - k/n) phi^k] ), s_x^2 = 1/(1 - phi^2)."""
    k = np.arange(1, n)
    return np.sqrt((1.0 / (1 - phi**2)) / n * (1 + 2 * np.sum((1 - k / n) * phi**k)))


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_blocking_error_matches_ar1(phi):
    rng = np.random.default_rng(1234)
    n = 2**19
    ratios = []
    for _ in range(3):
        r = blocking(_ar1(phi, n, rng))
        ratios.append(r.error / _exact_error(phi, n))
        assert r.n == n
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.08)
    tau_exact = (1 + phi) / (1 - phi)
    assert r.tau == pytest.approx(tau_exact, rel=0.2)
    if phi == 0.9:  # the naive error would be ~4.4x too small: the test can fail
        assert r.naive_error < 0.3 * r.error


def test_blocking_truncates_to_power_of_two_and_handles_constants():
    r = blocking(np.arange(1000.0))
    assert r.n == 512 and r.mean == pytest.approx(np.arange(488.0, 1000.0).mean())
    c = blocking(np.full(64, 2.0))
    assert c.mean == 2.0 and c.error == 0.0
    with pytest.raises(ValueError, match="at least 4"):
        blocking([1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        blocking([1.0, np.nan, 2.0, 3.0])


def test_blocking_chains_combines_independent_chains():
    rng = np.random.default_rng(7)
    phi, T, C = 0.8, 2**14, 16
    e = np.stack([_ar1(phi, T, rng) for _ in range(C)], axis=1)
    res, chain_err = blocking_chains(e)
    exact = _exact_error(phi, T) / np.sqrt(C)
    assert res.error == pytest.approx(exact, rel=0.15)
    assert chain_err == pytest.approx(exact, rel=0.4)  # 16 chain means: a coarse cross-check
    assert res.variance == pytest.approx(e.var())
    with pytest.raises(ValueError, match=r"\[T, C\]"):
        blocking_chains(np.zeros(8))
