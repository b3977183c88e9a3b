"""Error bars for correlated Monte Carlo series: the blocking method.

Flyvbjerg and Petersen (J. Chem. Phys. 91, 461 (1989)): repeatedly replace the series by
the means of neighbouring pairs. The naive variance of the mean, s_k^2 / n_k at level k,
grows with k until blocks are longer than the correlation time, then stays on a plateau
whose value is the variance of the mean. The plateau is chosen automatically with
M. Jonsson's test (Phys. Rev. E 98, 043304 (2018)): with gamma_k the lag-1
autocovariance and s_k^2 the variance at level k,

    M_j = sum_{k >= j} n_k (gamma_k / s_k^2)^2,

and the first level j with M_j below the 99% quantile of chi^2 is taken (d = log2 n
levels). As in Jonsson's reference implementation the quantile at level j has j + 1
degrees of freedom, which is stricter than d - j at small j: on AR(1) series it picks
longer blocks and removes most of the downward bias of stopping early (the test
``tests/nqs/test_blocking.py`` checks the result against the exact AR(1) value).
All sums are in float64 (numpy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

__all__ = ["BlockingResult", "blocking", "blocking_chains"]


@dataclass
class BlockingResult:
    """Mean and its standard error from blocking.

    Attributes: ``mean``, ``error`` (standard error of the mean), ``variance`` (sample
    variance of the series, ddof=0), ``n`` (samples used, a power of two),
    ``level`` (blocking transformations applied), ``block_size`` (2**level),
    ``naive_error`` (sqrt(variance / n), valid only for uncorrelated samples),
    ``tau`` ((error / naive_error)^2, the integrated autocorrelation factor 1 + 2 sum rho_t).
    """

    mean: float
    error: float
    variance: float
    n: int
    level: int
    block_size: int
    naive_error: float
    tau: float


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(a)):
        raise ValueError("blocking: the series contains NaN or inf values; check the local energies.")
    return a


def blocking(x, quantile: float = 0.99) -> BlockingResult:
    """Blocking estimate of the mean and its standard error for a correlated series.

    The series is truncated to its last 2**floor(log2 n) values (the start, where a chain
    is least equilibrated, is dropped). Needs at least 4 values.
    """
    a = _as_array(x)
    if a.size < 4:
        raise ValueError(f"blocking needs at least 4 samples, got {a.size}.")
    d = int(np.floor(np.log2(a.size)))
    a = a[a.size - 2**d :]
    n = a.size
    mu = a.mean()
    s = np.empty(d)
    gamma = np.empty(d)
    y = a
    for k in range(d):
        m = y.size
        dev = y - mu
        s[k] = np.dot(dev, dev) / m
        gamma[k] = np.dot(dev[:-1], dev[1:]) / m
        y = 0.5 * (y[0::2] + y[1::2])
    if s[0] == 0.0:  # constant series (e.g. zero-variance local energy)
        return BlockingResult(float(mu), 0.0, 0.0, n, 0, 1, 0.0, 1.0)
    sizes = 2.0 ** np.arange(d, 0, -1)  # n_k = 2^(d-k)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(s > 0, sizes * (gamma / s) ** 2, 0.0)
    M = np.cumsum(terms[::-1])[::-1]
    q = chi2.ppf(quantile, df=np.arange(1, d + 1))
    level = d - 1
    for k in range(d):
        if M[k] < q[k]:
            level = k
            break
    err2 = s[level] / 2 ** (d - level)
    naive2 = s[0] / n
    return BlockingResult(
        mean=float(mu),
        error=float(np.sqrt(err2)),
        variance=float(s[0]),
        n=n,
        level=level,
        block_size=2**level,
        naive_error=float(np.sqrt(naive2)),
        tau=float(err2 / naive2),
    )


def blocking_chains(e) -> tuple[BlockingResult, float]:
    """Blocking for C independent chains of equal length T, ``e`` of shape [T, C].

    The chains are averaged at each time step (independent chains: the average is a
    single correlated series with the same mean) and that series is blocked. Returns
    ``(result, chain_error)``; ``chain_error = std(chain means) / sqrt(C)`` is an
    independent cross-check (batch means with one batch per chain, valid when C >= 2).
    ``result.variance`` is replaced by the variance of all T*C values.
    """
    if hasattr(e, "detach"):
        e = e.detach().cpu().numpy()
    e = np.asarray(e, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"blocking_chains expects [T, C] local energies, got shape {e.shape}.")
    res = blocking(e.mean(axis=1))
    res.variance = float(e.var())
    means = e.mean(axis=0)
    chain_err = float(means.std(ddof=1) / np.sqrt(means.size)) if means.size > 1 else float("nan")
    return res, chain_err
