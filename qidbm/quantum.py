"""Closed-form statistics of one qubit in a field (MODELS.md section 1).

A quantum hidden unit whose classical neighbours are fixed sees

    H_1 = -phi * n - Gamma * X,        n = |1><1| = (I - Z) / 2,

with ``phi`` the unit's classical pre-activation and ``Gamma`` its transverse
field. With ``u = phi / 2`` and ``r = sqrt(u^2 + Gamma^2)`` the eigenvalues of
H_1 are ``-u +- r`` and, exactly,

    log Tr exp(-H_1) = u + log(2 cosh r)
    P(n = 1) = <n>   = 1/2 + (u / 2r) tanh r
    <X>              = (Gamma / r) tanh r

``d log Tr / d phi = <n>`` and ``d log Tr / d Gamma = <X>`` although n and X do
not commute. Every formula here depends on Gamma only through Gamma^2, so the
functions accept a signed ``gamma`` and use ``|gamma|``: the models store the
transverse field as an unconstrained parameter whose absolute value is the
field, which keeps every optimizer step valid.

All functions broadcast over any shapes, work on any device and dtype, are
finite at ``phi = Gamma = 0`` (value and gradient) and for ``|phi|`` up to at
least 1e3, and reduce to the classical unit (softplus, sigmoid) at Gamma = 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "softplus",
    "tanhc",
    "log_two_cosh",
    "qubit_log_partition",
    "qubit_prob_one",
    "qubit_log_prob",
    "qubit_x_expectation",
    "qubit_x_prob_plus",
]

# Below this |r| the series of tanh(r)/r is exact to float64 rounding.
_TANHC_SERIES_CUTOFF = 1e-3


def tanhc(r: Tensor) -> Tensor:
    """``tanh(r) / r`` with its value 1 at r = 0 (series ``1 - r^2/3 + 2 r^4/15``)."""
    small = r.abs() < _TANHC_SERIES_CUTOFF
    r_safe = torch.where(small, torch.ones_like(r), r)  # no 0/0 in either branch
    r2 = r * r
    return torch.where(small, 1.0 - r2 / 3.0 + 2.0 * r2 * r2 / 15.0, torch.tanh(r_safe) / r_safe)


def softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)`` to full precision for every x (torch's softplus returns x above 20)."""
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


def log_two_cosh(r: Tensor) -> Tensor:
    """``log(2 cosh r) = |r| + softplus(-2 |r|)``, stable for any r."""
    a = r.abs()
    return a + F.softplus(-2.0 * a)


def _half_field(phi: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    u = 0.5 * phi
    # hypot avoids the underflow of u^2 + Gamma^2 and gives r = |u| exactly at Gamma = 0.
    return u, torch.hypot(u, gamma)


class _QubitLogPartition(torch.autograd.Function):
    """log Tr exp(phi n + Gamma X) with the closed-form gradient (<n>, sign(gamma) <X>).

    autograd through ``sqrt(u^2 + Gamma^2)`` would produce 0/0 at phi = Gamma = 0;
    the closed forms are finite everywhere.
    """

    @staticmethod
    def forward(ctx, phi: Tensor, gamma: Tensor) -> Tensor:  # type: ignore[override]
        u, r = _half_field(phi, gamma)
        ctx.save_for_backward(phi, gamma)
        # u + log 2cosh r = (r + u) + softplus(-2r), with r + u formed without cancellation
        rpu, _ = _r_plus_minus_u(u, r, gamma)
        return rpu + F.softplus(-2.0 * r)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        phi, gamma = ctx.saved_tensors
        grad_phi = grad_gamma = None
        if ctx.needs_input_grad[0]:
            grad_phi = _sum_to(grad * qubit_prob_one(phi, gamma), phi.shape)
        if ctx.needs_input_grad[1]:
            _, r = _half_field(phi, gamma)
            # d/dgamma of a function of gamma^2: gamma * tanh(r) / r  (= sign(gamma) <X>)
            grad_gamma = _sum_to(grad * gamma * tanhc(r), gamma.shape)
        return grad_phi, grad_gamma


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """Reduce a broadcast gradient back to ``shape``."""
    if t.shape == shape:
        return t
    ndiff = t.dim() - len(shape)
    if ndiff > 0:
        t = t.sum(dim=tuple(range(ndiff)))
    dims = tuple(i for i, s in enumerate(shape) if s == 1 and t.shape[i] != 1)
    if dims:
        t = t.sum(dim=dims, keepdim=True)
    return t


def qubit_log_partition(phi: Tensor, gamma: Tensor) -> Tensor:
    """``log Tr exp(-H_1) = u + log(2 cosh r)``, ``u = phi/2``, ``r = sqrt(u^2 + gamma^2)``.

    At gamma = 0 this is ``softplus(phi)``, the classical unit summed out.
    Differentiable with ``d/dphi = <n>`` and ``d/dgamma = sign(gamma) <X>``.
    """
    phi, gamma = torch.broadcast_tensors(phi, gamma)
    return _QubitLogPartition.apply(phi, gamma)


def _r_plus_minus_u(u: Tensor, r: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    """``(r + u, r - u)`` without cancellation: the small one is ``gamma^2 / (r + |u|)``."""
    big = r + u.abs()
    # gamma * (gamma / big), not gamma^2 / big: gamma^2 overflows float32 beyond |gamma| ~ 1.8e19
    small = gamma * (gamma / torch.where(big > 0, big, torch.ones_like(big)))
    pos = u >= 0
    return torch.where(pos, big, small), torch.where(pos, small, big)


def qubit_prob_one(phi: Tensor, gamma: Tensor) -> Tensor:
    """``P(n = 1) = <n> = 1/2 + (u / 2r) tanh r`` for a Z-basis measurement.

    Evaluated as ``[(r+u) + (r-u) e^{-2r}] / [2 r (1 + e^{-2r})]`` with ``r +- u``
    formed without cancellation, so it is accurate for |phi| up to 1e3 and
    equals ``sigmoid(phi)`` to rounding at gamma = 0.
    """
    phi, gamma = torch.broadcast_tensors(phi, gamma)
    u, r = _half_field(phi, gamma)
    rpu, rmu = _r_plus_minus_u(u, r, gamma)
    e = torch.exp(-2.0 * r)
    zero = r == 0
    r_safe = torch.where(zero, torch.ones_like(r), r)
    p = (rpu + rmu * e) / (2.0 * r_safe * (1.0 + e))
    return torch.where(zero, torch.full_like(p, 0.5), p)


def qubit_log_prob(n: Tensor, phi: Tensor, gamma: Tensor) -> Tensor:
    """``log P(n | phi, gamma)`` of a Z-basis outcome ``n`` in {0, 1}, elementwise.

    ``log P(n=1) = log[(r+u) + (r-u) e^{-2r}] - log 2r - log(1 + e^{-2r})`` and the
    mirror image (u -> -u) for n = 0, computed in log space so that it is finite
    whenever the probability is positive. Used by the exact sampler's
    Metropolis ratio (forward only).
    """
    phi, gamma, n = torch.broadcast_tensors(phi, gamma, n)
    u, r = _half_field(phi, gamma)
    rpu, rmu = _r_plus_minus_u(u, r, gamma)
    # Choose the numerator terms for the observed outcome: n=1 -> (r+u, r-u), n=0 -> (r-u, r+u).
    on = n > 0.5
    a = torch.where(on, rpu, rmu)
    b = torch.where(on, rmu, rpu)
    zero = r == 0
    r_safe = torch.where(zero, torch.ones_like(r), r)
    log_num = torch.logaddexp(torch.log(a), torch.log(b) - 2.0 * r_safe)
    lp = log_num - torch.log(2.0 * r_safe) - F.softplus(-2.0 * r_safe)
    return torch.where(zero, torch.full_like(lp, -0.6931471805599453), lp)


def qubit_x_expectation(phi: Tensor, gamma: Tensor) -> Tensor:
    """``<X> = (Gamma / r) tanh r`` with Gamma = |gamma| (0 at Gamma = 0)."""
    phi, gamma = torch.broadcast_tensors(phi, gamma)
    _, r = _half_field(phi, gamma)
    return gamma.abs() * tanhc(r)


def qubit_x_prob_plus(phi: Tensor, gamma: Tensor) -> Tensor:
    """``P(X = +1) = (1 + <X>) / 2`` for an X-basis measurement."""
    return 0.5 * (1.0 + qubit_x_expectation(phi, gamma))
