"""The Petz recovery map of the partial trace, Condition S, and the QELBO (DO-EM section 4).

Visible qubits come first, so ``X (x) I_H`` is ``torch.kron(X, I)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .states import (
    GibbsState,
    inv_sqrtm_psd,
    partial_trace_hidden,
    sqrtm_psd,
    von_neumann_entropy,
)

__all__ = ["petz_recovery", "ConditionSReport", "check_condition_s", "qelbo", "log_likelihood"]


def petz_recovery(
    eta_v: torch.Tensor,
    sigma: torch.Tensor | GibbsState,
    n_visible: int,
    n_hidden: int,
    rtol: float = 1e-12,
) -> torch.Tensor:
    """Petz recovery map of ``Tr_H`` with respect to ``sigma = sigma_VH``:

    ``P(eta_V) = sigma^(1/2) ((sigma_V^(-1/2) eta_V sigma_V^(-1/2)) (x) I_H) sigma^(1/2)``,

    with ``sigma_V = Tr_H sigma`` and the inverse square root taken on the support of
    sigma_V. ``sigma`` may be a :class:`GibbsState` (its square root is then exact from
    the eigendecomposition of H). The result is completely positive in eta_V and trace
    preserving when sigma_V is full rank (DO-EM Lemma C.1).
    """
    if isinstance(sigma, GibbsState):
        sig = sigma.rho
        sig_half = sigma.sqrt()
    else:
        sig = sigma
        sig_half = sqrtm_psd(sigma)
    dv, dh = 2**n_visible, 2**n_hidden
    if eta_v.shape[-1] != dv or sig.shape[-1] != dv * dh:
        raise ValueError(f"eta_V must be {dv}x{dv} and sigma {dv * dh}x{dv * dh}; got "
                         f"{tuple(eta_v.shape)} and {tuple(sig.shape)}")
    sig_v = partial_trace_hidden(sig, n_visible, n_hidden)
    s_inv = inv_sqrtm_psd(sig_v, rtol=rtol)
    x = s_inv @ eta_v.to(s_inv.dtype) @ s_inv
    eye = torch.eye(dh, dtype=x.dtype, device=x.device)
    big = torch.kron(x.contiguous(), eye)
    out = sig_half @ big.to(sig_half.dtype) @ sig_half
    return 0.5 * (out + out.mH)


@dataclass
class ConditionSReport:
    """Outcome of :func:`check_condition_s`.

    ``satisfied`` is the conjunction of: sigma_V full rank; eta_V diagonal in ``basis``;
    sigma_VH block diagonal in ``basis (x) I_H`` (``max_offblock`` its largest off-block entry).
    Such a sigma_VH is ``sum_k p_k |k><k| (x) sigma_{H|k}``, which is separable.
    """

    satisfied: bool
    sigma_v_full_rank: bool
    eta_diagonal: bool
    sigma_block_diagonal: bool
    max_offblock: float
    min_sigma_v_eigenvalue: float
    basis: torch.Tensor


def check_condition_s(
    eta_v: torch.Tensor,
    sigma: torch.Tensor,
    n_visible: int,
    n_hidden: int,
    basis: torch.Tensor | None = None,
    atol: float = 1e-10,
) -> ConditionSReport:
    """Check DO-EM Condition S for ``(eta_V, sigma_VH)``.

    Condition S: sigma_V full rank and an orthonormal basis {|k>} of V with
    ``eta_V = sum_k eta_k |k><k|`` and ``sigma_VH = sum_k p_k |k><k| (x) sigma_{H|k}``.
    ``basis`` (columns = |k>) defaults to the computational basis when eta_V is diagonal
    and to the eigenbasis of eta_V otherwise. When eta_V has degenerate eigenvalues the
    eigenbasis is not unique and a valid basis can be missed: pass ``basis`` explicitly.
    """
    dv, dh = 2**n_visible, 2**n_hidden
    if eta_v.shape[-1] != dv or sigma.shape[-1] != dv * dh:
        raise ValueError("eta_V / sigma have sizes that do not match n_visible / n_hidden")
    dtype = torch.complex128 if (eta_v.is_complex() or sigma.is_complex()) else torch.float64
    eta_v = eta_v.to(dtype)
    sigma = sigma.to(dtype)
    if basis is None:
        off = eta_v - torch.diag(torch.diagonal(eta_v))
        if off.abs().max() <= atol:
            basis = torch.eye(dv, dtype=dtype, device=eta_v.device)
        else:
            basis = torch.linalg.eigh(eta_v)[1]
    basis = basis.to(dtype)
    sig_v = partial_trace_hidden(sigma, n_visible, n_hidden)
    ev = torch.linalg.eigvalsh(sig_v)
    full_rank = bool(ev.min() > atol)
    e_b = basis.mH @ eta_v @ basis
    eta_diag = bool((e_b - torch.diag(torch.diagonal(e_b))).abs().max() <= atol)
    big = torch.kron(basis.contiguous(), torch.eye(dh, dtype=dtype, device=basis.device))
    s_b = (big.mH @ sigma @ big).reshape(dv, dh, dv, dh)
    mask = ~torch.eye(dv, dtype=torch.bool, device=basis.device)
    offblock = s_b.abs().permute(0, 2, 1, 3).contiguous()[mask]
    max_off = float(offblock.max()) if offblock.numel() else 0.0
    block_diag = max_off <= atol
    return ConditionSReport(full_rank and eta_diag and block_diag, full_rank, eta_diag, block_diag,
                            max_off, float(ev.min()), basis)


def qelbo(eta_vh: torch.Tensor, log_rho_vh: torch.Tensor, n_visible: int, n_hidden: int) -> torch.Tensor:
    """Quantum ELBO (DO-EM Lemma 4.1) of an extension ``eta_VH`` of ``eta_V = Tr_H eta_VH``:

    ``QELBO = Tr eta_VH log rho_VH + S(eta_VH) - S(eta_V) <= Tr eta_V log rho_V``.

    ``log_rho_vh`` is the model's log (e.g. ``GibbsState.log()`` = -H - log Z).
    """
    eta_v = partial_trace_hidden(eta_vh, n_visible, n_hidden)
    cross = torch.einsum("ab,ba->", _cast_hermitian(eta_vh, log_rho_vh.dtype), log_rho_vh)
    cross = cross.real if cross.is_complex() else cross
    return cross + von_neumann_entropy(eta_vh) - von_neumann_entropy(eta_v)


def _cast_hermitian(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast a Hermitian x to dtype; complex -> real keeps the real part, which is exact whenever x is
    only paired with real symmetric matrices (the antisymmetric imaginary part traces to zero)."""
    if x.is_complex() and not dtype.is_complex:
        return x.real
    return x.to(dtype)


def log_likelihood(eta_v: torch.Tensor, rho_v: torch.Tensor, rtol: float = 1e-13) -> torch.Tensor:
    """``Tr eta_V log rho_V`` (DO-EM Eq. LP); -inf when supp eta_V is not inside supp rho_V."""
    r, U = torch.linalg.eigh(rho_v)
    diag = torch.einsum("ki,kl,li->i", U.conj(), _cast_hermitian(eta_v, U.dtype), U)
    diag = diag.real if diag.is_complex() else diag
    null = r <= rtol * r.max()
    if bool((null & (diag > 1e-13)).any()):
        return torch.tensor(-float("inf"), dtype=torch.float64, device=rho_v.device)
    return torch.where(null, torch.zeros_like(diag), diag * torch.log(torch.where(null, torch.ones_like(r), r))).sum()

