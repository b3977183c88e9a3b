"""Closed forms of the semi-quantum RBM (Demidik et al. 2025, Propositions 1-2).

Their sign convention (see :func:`qidbm.exact.hamiltonians.sqrbm_hamiltonian`):
``H = sum_i a_i Z_i + sum_{P in W} sum_j b_j^P sigma^P_{n+j} + sum_{P,i,j} w_ij^{ZP} Z_i sigma^P_{n+j}``.
Because H commutes with every visible Z, each visible basis state v carries a block
``H_v = sum_i a_i s_i(v) + sum_j Phi_j(v) . sigma_j`` with ``s_i(v) = (-1)^{v_i}`` and

    phi_j^P(v) = b_j^P + sum_i s_i(v) w_ij^{ZP},     Phi_j(v) = (phi_j^X, phi_j^Y, phi_j^Z) restricted to W,

so ``p~(v) = prod_i exp(-s_i(v) a_i) prod_j 2 cosh ||Phi_j(v)||`` (Prop. 1; the constant 2^m
cancels on normalisation). Gradients of ``L = -sum_v q_v log p(v)`` (Prop. 2):

    dL/da_i      = E_q[s_i] - E_p[s_i]
    dL/db_j^P    = -E_q[g_j^P] + E_p[g_j^P]
    dL/dw_ij^ZP  = -E_q[s_i g_j^P] + E_p[s_i g_j^P],     g_j^P(v) = phi_j^P(v) tanh(||Phi_j(v)||) / ||Phi_j(v)||.

(The printed Eq. 11/12 evaluates phi and ||Phi|| at different configurations in the
negative phase, a typo; the expectations above are what differentiating Prop. 1 gives.)
Parameters are dicts ``{"a": [..., n], "b": [..., |W|, m], "w": [..., |W|, n, m]}`` with
optional leading batch dimensions (e.g. several seeds trained at once).
"""
from __future__ import annotations

import math

import torch

from .hamiltonians import Hamiltonian
from .pauli import spins

__all__ = [
    "sqrbm_phi",
    "log_cosh_norm",
    "sqrbm_log_unnormalized",
    "sqrbm_log_probs",
    "sqrbm_nll",
    "sqrbm_nll_grad",
    "sqrbm_init",
    "sqrbm_params_to_theta",
    "sqrbm_theta_to_params",
]


def sqrbm_phi(params: dict, n_visible: int) -> torch.Tensor:
    """``phi_j^P(v)`` for all v: [..., 2^n, |W|, m]."""
    s = spins(n_visible, device=params["w"].device)  # [V, n]
    return torch.einsum("vi,...pij->...vpj", s, params["w"]) + params["b"][..., None, :, :]


def log_cosh_norm(sq: torch.Tensor) -> torch.Tensor:
    """``log cosh(sqrt(sq))`` for ``sq = ||Phi||^2 >= 0``, smooth (and differentiable) at 0.

    Uses ``r + log1p(exp(-2 r)) - log 2`` away from 0 and the series ``sq/2 - sq^2/12`` near 0
    (so autograd never differentiates sqrt at 0).
    """
    small = sq < 1e-8
    r = torch.sqrt(torch.where(small, torch.ones_like(sq), sq))
    big = r + torch.log1p(torch.exp(-2 * r)) - math.log(2.0)
    return torch.where(small, sq / 2 - sq**2 / 12, big)


def _tanh_over_norm(sq: torch.Tensor) -> torch.Tensor:
    small = sq < 1e-8
    r = torch.sqrt(torch.where(small, torch.ones_like(sq), sq))
    return torch.where(small, 1 - sq / 3, torch.tanh(r) / r)


def sqrbm_log_unnormalized(params: dict, n_visible: int) -> torch.Tensor:
    """``log p~(v) = -sum_i s_i(v) a_i + sum_j log cosh ||Phi_j(v)||`` (Prop. 1, without 2^m), [..., 2^n]."""
    s = spins(n_visible, device=params["a"].device)
    phi = sqrbm_phi(params, n_visible)
    return -(params["a"][..., None, :] * s).sum(-1) + log_cosh_norm((phi**2).sum(-2)).sum(-1)


def sqrbm_log_probs(params: dict, n_visible: int) -> torch.Tensor:
    """Normalised ``log p(v)`` [..., 2^n]."""
    lu = sqrbm_log_unnormalized(params, n_visible)
    return lu - torch.logsumexp(lu, -1, keepdim=True)


def sqrbm_nll(params: dict, q: torch.Tensor, n_visible: int) -> torch.Tensor:
    """``L = -sum_v q_v log p(v)`` [...]."""
    lp = sqrbm_log_probs(params, n_visible)
    return -(torch.where(q > 0, q * lp, torch.zeros_like(lp))).sum(-1)


def sqrbm_nll_grad(params: dict, q: torch.Tensor, n_visible: int) -> dict:
    """Closed-form gradients of ``L = -sum_v q_v log p(v)`` (Prop. 2, corrected), same shapes as params."""
    s = spins(n_visible, device=params["a"].device)  # [V, n]
    p = sqrbm_log_probs(params, n_visible).exp()  # [..., V]
    phi = sqrbm_phi(params, n_visible)  # [..., V, W, m]
    g = phi * _tanh_over_norm((phi**2).sum(-2))[..., None, :]  # [..., V, W, m]
    d = q.to(p.dtype) - p  # [..., V]
    return {
        "a": torch.einsum("...v,vi->...i", d, s),
        "b": -torch.einsum("...v,...vpj->...pj", d, g),
        "w": -torch.einsum("...v,vi,...vpj->...pij", d, s, g),
    }


def sqrbm_init(n_visible: int, n_hidden: int, paulis: str = "XZ", batch: tuple[int, ...] = (),
               generator: torch.Generator | None = None, low: float = -1.0, high: float = 1.0, device=None) -> dict:
    """Uniform ``[low, high]`` initial parameters (Demidik et al. use [-1, 1])."""
    k = len(paulis)

    def u(*shape):
        return (low + (high - low) * torch.rand(*batch, *shape, dtype=torch.float64, generator=generator)).to(device)

    return {"a": u(n_visible), "b": u(k, n_hidden), "w": u(k, n_visible, n_hidden)}


def sqrbm_params_to_theta(ham: Hamiltonian, params: dict) -> torch.Tensor:
    """Flatten closed-form parameters into the parameter vector of :func:`sqrbm_hamiltonian`."""
    return ham.join({"a": params["a"], "b": params["b"], "w": params["w"]}, device=params["a"].device)


def sqrbm_theta_to_params(ham: Hamiltonian, theta: torch.Tensor) -> dict:
    """Inverse of :func:`sqrbm_params_to_theta`."""
    return ham.split(theta)

