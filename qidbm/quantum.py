"""Closed-form statistics of one qubit in a field (docs/maths.md, 'One qubit in a field').

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

from qidbm.fused import kernel

__all__ = [
    "softplus",
    "tanhc",
    "log_two_cosh",
    "qubit_log_partition",
    "qubit_prob_one",
    "qubit_draw_prob",
    "qubit_log_prob",
    "qubit_metropolis_weight",
    "qubit_x_expectation",
    "qubit_x_prob_plus",
]

# Every branch below is a 0/1 mask folded into arithmetic (``torch.lerp`` with a 0/1
# weight, ``clamp_min`` for safe divisors) rather than ``torch.where``, and ``log1p`` is
# built from ``log``: on CPU both ``where`` and float32 ``log1p`` are scalar kernels that
# cost more than the rest of the closed form (docs/performance.md). Values are
# unchanged (float64: max error 0 to 4e-16 against the previous where-based forms).


def _log1p_unit(y: Tensor) -> Tensor:
    """``log1p(y)`` for ``0 <= y <= 1`` as ``log(w) - ((w - 1) - y) / w``, ``w = 1 + y``.

    ``w - 1`` is exact (Sterbenz), so the second term removes the rounding of ``w``:
    a few ulp everywhere, and exactly ``y`` when ``1 + y`` rounds to 1.
    """
    w = 1.0 + y
    return torch.log(w) - ((w - 1.0) - y) / w


def tanhc(r: Tensor) -> Tensor:
    """``tanh(r) / r``, even in r, with its limit 1 at r = 0.

    ``tanh`` is accurate to an ulp down to the smallest normal number, so the ratio is
    formed directly at ``|r|`` clamped to that number (where ``tanh(a) = a``).
    """
    a = r.abs().clamp_min(torch.finfo(r.dtype).tiny)
    return torch.tanh(a) / a


class _Softplus(torch.autograd.Function):
    """``max(x, 0) + log1p(e^{-|x|})`` whose derivative is one ``sigmoid(x)`` (backward and jvp).

    ``setup_context`` style with a generated vmap rule, so torch.func transforms (vmap, jvp,
    jacrev: the NQS local energies use them) and higher derivatives go through it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override]
        return _softplus_value(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        (x,) = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)

    @staticmethod
    def jvp(ctx, x_t: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return x_t * torch.sigmoid(x)


@kernel
def _softplus_value(x: Tensor) -> Tensor:
    return x.clamp_min(0) + _log1p_unit(torch.exp(-x.abs()))


def softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)`` to full precision for every x (torch's softplus returns x above 20).

    Gradient ``sigmoid(x)`` in one op (forward and reverse mode, torch.func transforms).
    """
    return _Softplus.apply(x)


def log_two_cosh(r: Tensor) -> Tensor:
    """``log(2 cosh r) = |r| + log1p(e^{-2|r|})``, stable for any r."""
    a = r.abs()
    return a + _log1p_unit(torch.exp(-2.0 * a))


def _half_field(phi: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    u = 0.5 * phi
    # hypot avoids the underflow of u^2 + Gamma^2 and gives r = |u| exactly at Gamma = 0.
    return u, torch.hypot(u, gamma)


def _r_plus_minus_u(u: Tensor, r: Tensor, gamma: Tensor, minus: bool = True) -> tuple[Tensor, Tensor | None]:
    """``(r + u, r - u)`` without cancellation: the small one is ``gamma^2 / (r + |u|)``
    (``r - u`` is None when ``minus`` is False)."""
    big = r + u.abs()
    # gamma * (gamma / big), not gamma^2 / big: gamma^2 overflows float32 beyond |gamma| ~ 1.8e19;
    # big = 0 only when gamma = 0, where the clamp gives 0 * (0 / tiny) = 0
    small = gamma * (gamma / big.clamp_min(torch.finfo(big.dtype).tiny))
    pos = (u >= 0).to(u.dtype)
    # lerp with a 0/1 weight selects exactly (both operands are finite)
    return torch.lerp(small, big, pos), (torch.lerp(big, small, pos) if minus else None)


def _prob_one_from(r: Tensor, rpu: Tensor, rmu: Tensor, e: Tensor) -> Tensor:
    # [(r+u) + (r-u) e^{-2r}] / [2r (1 + e^{-2r})]; z = 1[r = 0] turns the 0/0 at r = 0 into 1/2
    z = (r == 0).to(r.dtype)
    return (rpu + rmu * e + z) / (2.0 * r * (1.0 + e) + 2.0 * z)


class _QubitLogPartition(torch.autograd.Function):
    """log Tr exp(phi n + Gamma X) with the closed-form gradient (<n>, sign(gamma) <X>).

    autograd through ``sqrt(u^2 + Gamma^2)`` would produce 0/0 at phi = Gamma = 0;
    the closed forms are finite everywhere. When gradients are needed the forward
    pass also forms them from its own intermediates (u, r), so the backward pass is one
    multiply per input. The value is accurate to rounding (relative); the two derivatives,
    ``<n> = 1/2 + u tanh(r) / 2r`` and ``gamma tanh(r) / r``, to absolute accuracy (a few eps, from
    the value's own ``e^{-2r}``), which is all a gradient step needs and costs a third of the passes.
    """

    @staticmethod
    def forward(ctx, phi: Tensor, gamma: Tensor) -> Tensor:  # type: ignore[override]
        out, d_phi, d_gamma = _log_partition_and_derivatives(phi, gamma, *ctx.needs_input_grad[:2])
        ctx.save_for_backward(phi, gamma, d_phi, d_gamma)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        phi, gamma, d_phi, d_gamma = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: rebuild the statistics differentiably
            d_phi = qubit_prob_one(phi, gamma) if d_phi is not None else None
            d_gamma = gamma * tanhc(torch.hypot(0.5 * phi, gamma)) if d_gamma is not None else None
        grad_phi = None if d_phi is None else _sum_to(grad * d_phi, phi.shape)
        grad_gamma = None if d_gamma is None else _sum_to(grad * d_gamma, gamma.shape)
        return grad_phi, grad_gamma


@kernel
def _log_partition_and_derivatives(
    phi: Tensor, gamma: Tensor, need_phi: bool, need_gamma: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``u + log 2cosh r`` and, where asked, its derivatives ``<n>`` and ``gamma tanh(r) / r``."""
    u, r = _half_field(phi, gamma)
    rpu, _ = _r_plus_minus_u(u, r, gamma, minus=False)
    e = torch.exp(-2.0 * r)
    w = 1.0 + e
    # u + log 2cosh r = (r + u) + log1p(e^{-2r}), with r + u formed without cancellation and
    # log1p as in _log1p_unit (w - 1 is exact, so the second term removes w's rounding)
    out = rpu + (torch.log(w) - ((w - 1.0) - e) / w)
    d_phi = d_gamma = None
    if need_phi or need_gamma:
        # q = tanh(r) / 2r = (1 - e^{-2r}) / (2r (1 + e^{-2r})) from the same exponential. 1 - e loses
        # digits for small r, but u and gamma (both <= r in size) multiply q: the error stays absolute,
        # a few eps; q = 0 instead of its limit 1/2 at r = 0, where u = gamma = 0.
        q = (1.0 - e) / (2.0 * r.clamp_min(torch.finfo(r.dtype).tiny) * w)
        d_phi = q * u + 0.5 if need_phi else None
        # d/dgamma of a function of gamma^2: gamma * tanh(r) / r  (= sign(gamma) <X>)
        d_gamma = 2.0 * q * gamma if need_gamma else None
    return out, d_phi, d_gamma


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


def qubit_prob_one(phi: Tensor, gamma: Tensor) -> Tensor:
    """``P(n = 1) = <n> = 1/2 + (u / 2r) tanh r`` for a Z-basis measurement.

    Evaluated as ``[(r+u) + (r-u) e^{-2r}] / [2 r (1 + e^{-2r})]`` with ``r +- u``
    formed without cancellation, so it is accurate for |phi| up to 1e3 and
    equals ``sigmoid(phi)`` to rounding at gamma = 0.
    """
    phi, gamma = torch.broadcast_tensors(phi, gamma)
    u, r = _half_field(phi, gamma)
    rpu, rmu = _r_plus_minus_u(u, r, gamma)
    return _prob_one_from(r, rpu, rmu, torch.exp(-2.0 * r))


def qubit_draw_prob(phi: Tensor, gamma: Tensor) -> Tensor:
    """``P(n = 1) = 1/2 + u tanh(r) / 2r = 1/2 + phi (sigmoid(rho) - 1/2) / rho``, ``rho = 2r =
    sqrt(phi^2 + 4 gamma^2)``: the form the samplers use.

    Seven cheap elementwise passes (no ``tanh``, no ``hypot``) instead of :func:`qubit_prob_one`'s
    ~25 (docs/performance.md measures what that buys). The price is relative accuracy in the
    tails: the error is absolute, a few float eps (float32: <= 2e-7; ``sigmoid(rho) - 1/2`` loses
    digits for small rho, but ``|phi| <= rho`` keeps the product's error absolute), so P(n = 1)
    below ~1e-7 comes out as ~0. A 0/1 draw against float32 uniforms (grid 2^-24) and a mean-field
    update cannot tell the difference; log-probabilities use the accurate forms. At gamma = 0 it is
    ``sigmoid(phi)`` to the same absolute accuracy. Valid for ``|phi|, 2|gamma|`` below
    ``sqrt(finfo.max)`` (1.8e19 in float32), where ``phi^2`` stays finite.
    """
    return _draw_prob(phi, gamma)


@kernel
def _draw_prob(phi: Tensor, gamma: Tensor) -> Tensor:
    # finfo.tiny inside the square root keeps rho > 0 at phi = gamma = 0 (P = 1/2 there) without a
    # clamp pass; it is added to the small [n_units] vector 4 gamma^2, not to the [batch, n_units] one.
    tiny = torch.finfo(phi.dtype).tiny
    rho = torch.addcmul(4.0 * gamma * gamma + tiny, phi, phi)
    if phi.requires_grad or gamma.requires_grad:  # autograd keeps sigmoid's output: out of place
        rho = rho.sqrt()
        return (torch.sigmoid(rho) - 0.5) / rho * phi + 0.5
    rho = rho.sqrt_()
    # seven passes: addcmul, sqrt, sigmoid, sub, div, mul, add (separate, not fused: an FMA would
    # round 1/2 + (1/2 / |phi|) phi above 1 at gamma = 0)
    return torch.sigmoid(rho).sub_(0.5).div_(rho).mul_(phi).add_(0.5)


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


def qubit_metropolis_weight(n: Tensor, phi: Tensor, gamma: Tensor) -> Tensor:
    """``a(n) = log Tr e^{-H_1} + log P(n | phi, Gamma) - phi n`` for a Z outcome n in {0, 1}.

    The per-qubit term of the exact sampler's Metropolis ratio (docs/maths.md, 'Exact Metropolis-corrected step'). With
    ``s = 2n - 1``, ``A = r + s u`` and ``B = r - s u`` (both formed without cancellation) the
    terms collapse to

        a(n) = B + log(A + B e^{-2r}) - log(2r)

    (the ``log Tr`` and ``log P`` terms share ``log(1 + e^{-2r})``, which cancels), which is 0 at Gamma = 0 (the classical case: every proposal accepted) and finite whenever
    P(n) > 0. At r = 0 (phi = Gamma = 0) its limit 0 is taken exactly.
    """
    phi, gamma, n = torch.broadcast_tensors(phi, gamma, n)
    u, r = _half_field(phi, gamma)
    rpu, rmu = _r_plus_minus_u(u, r, gamma)
    w = n.to(phi.dtype)
    a, b = torch.lerp(rmu, rpu, w), torch.lerp(rpu, rmu, w)  # n = 1: (r + u, r - u); n = 0: mirrored
    z2 = 2.0 * (r == 0).to(r.dtype)
    # log(A + B e^{-2r}) as a log-sum-exp of log A and log B - 2r: e^{-2r} alone underflows
    # while P(n) is still representable (|phi| >~ 90 in float32 against the observed n)
    la, lb = torch.log(a + z2), torch.log(b) - 2.0 * r
    log_sum = torch.maximum(la, lb) + _log1p_unit(torch.exp(-(la - lb).abs()))
    return b + log_sum - torch.log(2.0 * r + z2)


def qubit_x_expectation(phi: Tensor, gamma: Tensor) -> Tensor:
    """``<X> = (Gamma / r) tanh r`` with Gamma = |gamma| (0 at Gamma = 0)."""
    phi, gamma = torch.broadcast_tensors(phi, gamma)
    _, r = _half_field(phi, gamma)
    return gamma.abs() * tanhc(r)


def qubit_x_prob_plus(phi: Tensor, gamma: Tensor) -> Tensor:
    """``P(X = +1) = (1 + <X>) / 2`` for an X-basis measurement."""
    return 0.5 * (1.0 + qubit_x_expectation(phi, gamma))
