"""How fast sampling chains move: integrated autocorrelation time and class switches.

A chain that mixes slowly repeats itself: its summary statistic ``f(x_t)`` stays correlated over
many sweeps, and the images it draws keep their class. Two measures, both over ``C`` chains recorded
at ``T`` consecutive sweeps (arrays ``[T, C]``):

* :func:`integrated_autocorrelation_time`: ``tau = 1 + 2 sum_{t>=1} rho(t)``, the number of sweeps
  that give one independent draw of ``f`` (Sokal 1997's estimator: the autocorrelation ``rho``
  averaged over chains, summed up to the first window ``M >= c tau(M)``);
* :func:`class_switches`: how often the class a fixed classifier reads in the chain's image changes,
  per 1,000 sweeps and chain.
"""

from __future__ import annotations

import torch
from torch import Tensor


def autocorrelation(x: Tensor) -> Tensor:
    """Normalised autocorrelation ``rho(t)``, ``t = 0 .. T-1``, of ``x`` [T, C] averaged over the C chains.

    ``rho(t) = sum_c sum_s (x_{s,c} - m_c)(x_{s+t,c} - m_c) / sum_c sum_s (x_{s,c} - m_c)^2`` with each
    chain's own mean ``m_c`` (computed by FFT, zero-padded: no wrap-around)."""
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"need a [T, C] array with T >= 2 sweeps, got shape {tuple(x.shape)}")
    x = x.to(torch.float64)
    x = x - x.mean(0, keepdim=True)
    n = x.shape[0]
    f = torch.fft.rfft(x, n=2 * n, dim=0)
    acov = torch.fft.irfft(f * f.conj(), n=2 * n, dim=0)[:n].sum(1)
    if acov[0] <= 0:
        raise ValueError("the statistic is constant on every chain: its autocorrelation is undefined")
    return acov / acov[0]


def integrated_autocorrelation_time(x: Tensor, c: float = 5.0) -> float:
    """``tau = 1 + 2 sum_{t=1}^{M} rho(t)`` (:func:`autocorrelation`) with Sokal's window: the smallest
    ``M`` with ``M >= c tau(M)``; if none exists within the record (the chains are too short for the
    estimate, which is then a lower bound), the sum over the whole record."""
    rho = autocorrelation(x)
    taus = 2.0 * torch.cumsum(rho, 0) - 1.0
    m = torch.arange(len(taus), dtype=taus.dtype)
    ok = torch.nonzero(m >= c * taus)
    return float(taus[ok[0, 0]] if len(ok) else taus[-1])


def class_switches(labels: Tensor, sweeps_per_record: int = 1) -> float:
    """Class changes per 1,000 sweeps and chain: ``labels`` [T, C] are the classes read at records
    ``sweeps_per_record`` sweeps apart, and each record whose class differs from the previous one counts."""
    if labels.dim() != 2 or labels.shape[0] < 2:
        raise ValueError(f"need a [T, C] array of classes with T >= 2 records, got shape {tuple(labels.shape)}")
    changes = (labels[1:] != labels[:-1]).to(torch.float64).mean()
    return float(changes * 1000.0 / sweeps_per_record)
