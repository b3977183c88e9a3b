"""Gibbs states, partial traces, matrix functions and entropies (dense, float64/complex128).

All matrix functions go through ``torch.linalg.eigh``: for Hermitian ``A = U diag(l) U^H``,
``f(A) = U diag(f(l)) U^H``. Functions that are undefined off the support (log, inverse
square root) act on the support only (eigenvalues above a relative tolerance).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .hamiltonians import Hamiltonian

__all__ = [
    "GibbsState",
    "gibbs",
    "gibbs_state",
    "log_partition",
    "matrix_function",
    "sqrtm_psd",
    "inv_sqrtm_psd",
    "logm_psd",
    "partial_trace",
    "partial_trace_hidden",
    "visible_distribution",
    "von_neumann_entropy",
    "relative_entropy",
    "kl_divergence",
    "total_variation",
    "is_density_operator",
    "diagonal_state",
    "CQEvaluation",
    "cq_evaluate",
    "model_distribution",
    "block_exp_states",
]

_DEFAULT_RTOL = 1e-12


@dataclass
class GibbsState:
    """Gibbs state ``rho = exp(-H)/Z`` with its eigendecomposition.

    ``weights`` are ``exp(-(l - l_min))`` so that ``rho = U diag(weights/sum(weights)) U^H`` and
    ``log Z = -l_min + log sum(weights)`` never overflow.
    """

    evals: torch.Tensor
    evecs: torch.Tensor
    weights: torch.Tensor
    log_z: torch.Tensor

    @property
    def probs(self) -> torch.Tensor:
        """Eigenvalues of rho."""
        return self.weights / self.weights.sum(-1, keepdim=True)

    @property
    def rho(self) -> torch.Tensor:
        return _reconstruct(self.evecs, self.probs)

    def sqrt(self) -> torch.Tensor:
        """``rho^(1/2)``."""
        return _reconstruct(self.evecs, self.probs.sqrt())

    def log(self) -> torch.Tensor:
        """``log rho = -H - log Z`` (exact; rho is full rank)."""
        return _reconstruct(self.evecs, -self.evals - self.log_z[..., None])


def _reconstruct(U: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    out = (U * d.to(U.dtype)[..., None, :]) @ U.mH
    return 0.5 * (out + out.mH)  # exact Hermiticity for later eigh calls


def _check_hermitian(A: torch.Tensor, what: str = "matrix") -> None:
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{what} must be square, got shape {tuple(A.shape)}")
    if A.dtype not in (torch.float64, torch.complex128):
        raise TypeError(f"{what} must be float64 or complex128 (got {A.dtype}); call .double()")


def gibbs(H: torch.Tensor) -> GibbsState:
    """Eigendecomposition-based Gibbs state of a Hermitian (batched) H at inverse temperature 1."""
    _check_hermitian(H, "H")
    evals, evecs = torch.linalg.eigh(H)
    lmin = evals.min(-1).values
    w = torch.exp(-(evals - lmin[..., None]))
    log_z = -lmin + torch.log(w.sum(-1))
    return GibbsState(evals, evecs, w, log_z)


def gibbs_state(H: torch.Tensor) -> torch.Tensor:
    """``rho = exp(-H) / Tr exp(-H)`` via eigh."""
    return gibbs(H).rho


def log_partition(H: torch.Tensor) -> torch.Tensor:
    """``log Tr exp(-H)`` = logsumexp of ``-eigvalsh(H)``."""
    _check_hermitian(H, "H")
    return torch.logsumexp(-torch.linalg.eigvalsh(H), dim=-1)


def matrix_function(A: torch.Tensor, fn, rtol: float | None = None) -> torch.Tensor:
    """``U diag(fn(l)) U^H`` for Hermitian A; with ``rtol`` only eigenvalues
    ``l > rtol * max|l|`` are kept (fn applied on the support, zero elsewhere)."""
    _check_hermitian(A)
    l, U = torch.linalg.eigh(A)
    if rtol is None:
        return _reconstruct(U, fn(l))
    cut = rtol * l.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(l.dtype).tiny)
    keep = l > cut
    vals = torch.where(keep, fn(torch.where(keep, l, torch.ones_like(l))), torch.zeros_like(l))
    return _reconstruct(U, vals)


def sqrtm_psd(A: torch.Tensor) -> torch.Tensor:
    """Square root of a PSD matrix (tiny negative eigenvalues from round-off clipped to 0)."""
    return matrix_function(A, lambda l: l.clamp_min(0).sqrt())


def inv_sqrtm_psd(A: torch.Tensor, rtol: float = _DEFAULT_RTOL) -> torch.Tensor:
    """Inverse square root on the support of a PSD matrix (Moore-Penrose sense)."""
    return matrix_function(A, lambda l: l.rsqrt(), rtol=rtol)


def logm_psd(A: torch.Tensor, rtol: float = _DEFAULT_RTOL) -> torch.Tensor:
    """Matrix logarithm on the support of a PSD matrix (zero on the kernel)."""
    return matrix_function(A, torch.log, rtol=rtol)


def partial_trace(rho: torch.Tensor, keep: list[int] | tuple[int, ...], n_qubits: int) -> torch.Tensor:
    """Partial trace keeping the qubits in ``keep`` (in the given order) of an N-qubit operator.

    ``(Tr_{not keep} rho)_{ab} = sum_c rho_{(a,c),(b,c)}`` with the kept qubits permuted to the front.
    """
    keep = list(keep)
    if len(set(keep)) != len(keep) or any(not 0 <= q < n_qubits for q in keep):
        raise ValueError(f"keep must list distinct qubits in [0, {n_qubits}), got {keep}")
    dim = 2**n_qubits
    if rho.shape[-1] != dim:
        raise ValueError(f"operator of size {rho.shape[-1]} does not act on {n_qubits} qubits")
    batch = rho.shape[:-2]
    t = rho.reshape(*batch, *([2] * (2 * n_qubits)))
    nb = len(batch)
    rest = [q for q in range(n_qubits) if q not in keep]
    order = keep + rest
    perm = list(range(nb)) + [nb + q for q in order] + [nb + n_qubits + q for q in order]
    t = t.permute(perm).reshape(*batch, 2 ** len(keep), 2 ** len(rest), 2 ** len(keep), 2 ** len(rest))
    return torch.einsum("...acbc->...ab", t)


def partial_trace_hidden(rho: torch.Tensor, n_visible: int, n_hidden: int) -> torch.Tensor:
    """``rho_V = Tr_H rho`` for visible-first ordering (a reshape, no permutation)."""
    dv, dh = 2**n_visible, 2**n_hidden
    if rho.shape[-1] != dv * dh:
        raise ValueError(f"operator of size {rho.shape[-1]} is not on {n_visible}+{n_hidden} qubits")
    t = rho.reshape(*rho.shape[:-2], dv, dh, dv, dh)
    return torch.einsum("...ahbh->...ab", t)


def visible_distribution(rho: torch.Tensor, n_visible: int, n_hidden: int) -> torch.Tensor:
    """``p(v) = <v| Tr_H rho |v>`` (Z-basis measurement of the visible qubits), float64 [2^n]."""
    dv, dh = 2**n_visible, 2**n_hidden
    d = torch.diagonal(rho, dim1=-2, dim2=-1).reshape(*rho.shape[:-2], dv, dh).sum(-1)
    return d.real if d.is_complex() else d


def _xlogx(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp_min(0)
    return torch.where(x > 0, x * torch.log(torch.where(x > 0, x, torch.ones_like(x))), torch.zeros_like(x))


def von_neumann_entropy(rho: torch.Tensor) -> torch.Tensor:
    """``S(rho) = -Tr rho log rho`` (nats; 0 log 0 = 0)."""
    _check_hermitian(rho, "rho")
    return -_xlogx(torch.linalg.eigvalsh(rho)).sum(-1)


def relative_entropy(eta: torch.Tensor, rho: torch.Tensor, rtol: float = 1e-13, atol: float = 1e-13) -> torch.Tensor:
    """Umegaki relative entropy ``D(eta||rho) = Tr eta (log eta - log rho)`` in nats.

    ``0 log 0 = 0``; ``+inf`` when supp(eta) is not inside supp(rho), detected as an
    eigenvector ``|r>`` of rho with eigenvalue ``<= rtol * max eig`` and ``<r|eta|r> > atol``.
    """
    _check_hermitian(eta, "eta")
    _check_hermitian(rho, "rho")
    if eta.shape != rho.shape:
        raise ValueError(f"eta and rho must have the same shape, got {tuple(eta.shape)} and {tuple(rho.shape)}")
    e = torch.linalg.eigvalsh(eta)
    r, U = torch.linalg.eigh(rho)
    diag = torch.einsum("...ki,...kl,...li->...i", U.conj(), eta, U)
    diag = diag.real if diag.is_complex() else diag
    null = r <= rtol * r.amax(-1, keepdim=True)
    bad = (null & (diag > atol)).any(-1)
    logr = torch.log(torch.where(null, torch.ones_like(r), r))
    cross = torch.where(null, torch.zeros_like(diag), diag * logr).sum(-1)
    d = _xlogx(e).sum(-1) - cross
    return torch.where(bad, torch.full_like(d, math.inf), d)


def kl_divergence(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Classical ``KL(q||p) = sum q log(q/p)`` (0 log 0 = 0, +inf if q > 0 where p = 0)."""
    q = q.to(torch.float64)
    p = p.to(torch.float64)
    pos = q > 0
    bad = (pos & (p <= 0)).any(-1)
    terms = torch.where(pos, q * (torch.log(torch.where(pos, q, torch.ones_like(q)))
                                  - torch.log(torch.where(pos & (p > 0), p, torch.ones_like(p)))),
                        torch.zeros_like(q))
    out = terms.sum(-1)
    return torch.where(bad, torch.full_like(out, math.inf), out)


def total_variation(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``TVD(q, p) = (1/2) sum |q - p|``."""
    return 0.5 * (q - p).abs().sum(-1)


def is_density_operator(rho: torch.Tensor, atol: float = 1e-10) -> bool:
    """Hermitian, positive semi-definite (eigenvalues >= -atol) and unit trace (within atol)."""
    if rho.shape[-1] != rho.shape[-2]:
        return False
    herm = torch.allclose(rho, rho.mH, atol=atol, rtol=0)
    if not herm:
        return False
    ev = torch.linalg.eigvalsh(0.5 * (rho + rho.mH))
    tr = torch.diagonal(rho, dim1=-2, dim2=-1).sum(-1)
    tr = tr.real if tr.is_complex() else tr
    return bool((ev >= -atol).all()) and bool(((tr - 1).abs() <= atol).all())


def diagonal_state(q: torch.Tensor) -> torch.Tensor:
    """The classical data density operator ``eta_V = sum_v q_v |v><v|``."""
    q = torch.as_tensor(q, dtype=torch.float64)
    if q.dim() != 1 or (q < 0).any() or abs(float(q.sum()) - 1) > 1e-9:
        raise ValueError("q must be a 1-D probability vector (non-negative, summing to 1)")
    return torch.diag(q)


# --------------------------------------------------------------------------- CQ models
def block_exp_states(blocks: torch.Tensor):
    """``(log Tr exp(-H_v), rho_v = exp(-H_v)/Tr)`` for a batch of Hermitian blocks [V, a, a].

    Real 2x2 blocks use the closed form (docs/maths.md, 'One qubit in a field'):
    ``H = mu I + K``, ``K`` traceless with ``r = ||K||``, ``exp(-H) = e^{-mu}(cosh r I - sinh r K/r)``,
    so ``log Tr = -mu + log(2 cosh r)`` and ``rho = (I - (tanh r / r) K)/2``; larger blocks use eigh.
    """
    a = blocks.shape[-1]
    if a == 2 and not blocks.is_complex():
        mu = 0.5 * (blocks[..., 0, 0] + blocks[..., 1, 1])
        eye = torch.eye(2, dtype=blocks.dtype, device=blocks.device)
        K = blocks - mu[..., None, None] * eye
        r = torch.sqrt(K[..., 0, 0] ** 2 + K[..., 0, 1] ** 2)
        logtr = -mu + r + torch.log1p(torch.exp(-2 * r))  # log 2cosh r = r + log(1 + e^{-2r})
        small = r < 1e-4
        rs = torch.where(small, torch.ones_like(r), r)
        t_over_r = torch.where(small, 1 - r**2 / 3, torch.tanh(rs) / rs)
        rho = 0.5 * (eye - t_over_r[..., None, None] * K)
        return logtr, rho
    st = gibbs(blocks)
    return st.log_z, st.rho


@dataclass
class CQEvaluation:
    """Exact quantities of a CQ model at one parameter vector.

    ``log_probs`` [2^n] = log p(v); ``log_z``; ``block_log_z`` [2^n] = log Tr exp(-H_v);
    ``block_states`` [2^n, 2^m, 2^m] = rho_{H|v}; ``hidden`` [2^n, K] = Tr(rho_{H|v} K_k) for the
    distinct hidden factors K_k (see :class:`~qidbm.exact.hamiltonians.CQStructure`).
    """

    log_probs: torch.Tensor
    log_z: torch.Tensor
    block_log_z: torch.Tensor
    block_states: torch.Tensor | None
    hidden: torch.Tensor | None
    structure: object = None

    @property
    def probs(self) -> torch.Tensor:
        return self.log_probs.exp()

    def expectations(self, weights: torch.Tensor) -> torch.Tensor:
        """``sum_v w_v <dH/dtheta_i>_{rho_{H|v}}`` for all parameters i, [P]
        (``weights = q`` gives the E-step statistics, ``weights = p`` the model expectations)."""
        return self.structure.weighted_expectations(self.hidden, weights.to(self.hidden.dtype))

    def model_expectations(self) -> torch.Tensor:
        """``<dH/dtheta_i>_rho = sum_v p(v) <dH/dtheta_i>_{rho_{H|v}}``."""
        return self.expectations(self.probs)

    @property
    def stats(self) -> torch.Tensor:
        """``<dH/dtheta_i>_{rho_{H|v}}`` per block, [2^n, P] (small systems only)."""
        st = self.structure
        return st.signs * self.hidden[:, st.hidden_index] * st.coeffs[None, :]


def cq_evaluate(ham: Hamiltonian, theta: torch.Tensor, with_stats: bool = True) -> CQEvaluation:
    """Block-wise evaluation of a CQ model: ``p(v) = Tr exp(-H_v) / sum_v' Tr exp(-H_v')``.

    Costs 2^n eigendecompositions of size 2^m (closed form for 2x2 real blocks) instead of
    one of size 2^(n+m).
    """
    cq = ham.cq_structure(theta.device)
    blocks = cq.blocks(theta)
    blz, states = block_exp_states(blocks)
    log_z = torch.logsumexp(blz, 0)
    hidden = cq.hidden_expectations(states) if with_stats else None
    return CQEvaluation(blz - log_z, log_z, blz, states if with_stats else None, hidden, cq)


def model_distribution(ham: Hamiltonian, theta: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """The model's visible distribution ``p(v) = Tr(Lambda_v rho)`` [2^n].

    ``method``: ``"blocks"`` (CQ models only), ``"dense"`` (any model) or ``"auto"``.
    """
    if method not in ("auto", "blocks", "dense"):
        raise ValueError("method must be 'auto', 'blocks' or 'dense'")
    if method == "blocks" or (method == "auto" and ham.is_cq):
        return cq_evaluate(ham, theta, with_stats=False).probs
    return visible_distribution(gibbs_state(ham.dense(theta)), ham.n_visible, ham.n_hidden)
