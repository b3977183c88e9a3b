"""Baselines: gradient ascent on the exact log-likelihood, and the bound-based QBM of Amin et al.

Exact derivative of ``exp(-H)`` (Daleckii-Krein): with ``H = U diag(l) U^H``,

    d exp(-H)[E] = U (F o (U^H E U)) U^H,   F_kl = (e^{-l_k} - e^{-l_l}) / (l_k - l_l),  F_kk = -e^{-l_k},

the first divided difference of ``x -> e^{-x}``. (docs/maths.md, 'Derivative of
exp(-H)'; this quotient, not its negative, is the one that matches finite differences, see
``tests/exact/test_baselines.py``.) Since F is symmetric,
``Tr(A d exp(-H)[E]) = Tr(d exp(-H)[A] E)``, so the gradient of any ``Tr(A exp(-H))`` over all
parameters costs one eigendecomposition and four matrix products.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch

from .doem import EMHistory
from .hamiltonians import Hamiltonian
from .petz import _cast_hermitian, log_likelihood
from .states import (
    cq_evaluate,
    gibbs,
    partial_trace_hidden,
)

__all__ = [
    "exp_divided_differences",
    "frechet_exp",
    "exact_log_likelihood_and_grad",
    "cq_log_likelihood_and_grad",
    "bound_log_likelihood_and_grad",
    "train_gradient_ascent",
    "train_exact_gradient",
    "train_bound_qbm",
]


def exp_divided_differences(evals: torch.Tensor, shift: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``F_kl = (f(l_k) - f(l_l)) / (l_k - l_l)``, ``F_kk = f'(l_k)`` for ``f(x) = exp(-(x - shift))``.

    Stable form: with ``a = min(l_k, l_l)``, ``d = |l_k - l_l|``:
    ``F_kl = e^{-(a - shift)} expm1(-d) / d`` (-> ``-e^{-(a-shift)}`` as d -> 0).
    """
    lk = evals[..., :, None]
    ll = evals[..., None, :]
    a = torch.minimum(lk, ll)
    d = (lk - ll).abs()
    small = d < 1e-12
    ratio = torch.where(small, -1.0 + d / 2, torch.expm1(-d) / torch.where(small, torch.ones_like(d), d))
    return torch.exp(-(a - shift)) * ratio


def frechet_exp(H: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """Frechet derivative of ``exp(-H)`` in direction E (Daleckii-Krein), dense."""
    l, U = torch.linalg.eigh(H)
    F = exp_divided_differences(l)
    return U @ (F.to(U.dtype) * (U.mH @ E.to(U.dtype) @ U)) @ U.mH


def _log_divided_differences(mu: torch.Tensor) -> torch.Tensor:
    """First divided differences of log at the (positive) eigenvalues mu."""
    mk = mu[:, None]
    ml = mu[None, :]
    d = mk - ml
    close = d.abs() <= 1e-10 * torch.maximum(mk, ml)
    lr = torch.log(mk) - torch.log(ml)
    return torch.where(close, 2.0 / (mk + ml), lr / torch.where(close, torch.ones_like(d), d))


def exact_log_likelihood_and_grad(
    ham: Hamiltonian,
    theta: torch.Tensor,
    target: torch.Tensor,
    objective: str = "auto",
):
    """Exact log-likelihood and its gradient for any Hamiltonian model (dense, Daleckii-Krein).

    ``target`` is either a probability vector q over visible basis states or a density
    operator eta_V. ``objective``:

    * ``"measured"``: ``L = sum_v q_v log p(v)``, ``p(v) = Tr(Lambda_v rho)`` (Amin et al.,
      Demidik et al.); needs classical data;
    * ``"quantum"``: ``L = Tr eta_V log rho_V`` (DO-EM Eq. LP);
    * ``"auto"``: measured for a vector, quantum for a matrix. Both agree on CQ models.

    ``dL/dtheta_i = Tr(B O_i) + <O_i>_rho`` with ``B = d exp(-H)[Xi (x) I_H] / Z`` and ``Xi = dL/d rho_V``
    (``diag(q/p)`` or the log divided-difference transform of eta_V).
    Returns ``(L, grad, extra)`` with ``extra = {"p": p(v), "rho_v": rho_V}``.
    """
    n, m = ham.n_visible, ham.n_hidden
    dv, dh = 2**n, 2**m
    classical = target.dim() == 1
    if objective == "auto":
        objective = "measured" if classical else "quantum"
    if objective not in ("measured", "quantum"):
        raise ValueError("objective must be 'measured', 'quantum' or 'auto'")
    if objective == "measured" and not classical:
        d = torch.diagonal(target)
        if (target - torch.diag(d)).abs().max() > 1e-12:
            raise ValueError("objective='measured' needs classical (diagonal) data")
        target = d.real if d.is_complex() else d
        classical = True
    H = ham.dense(theta)
    st = gibbs(H)
    if objective == "measured":  # only diag(rho) is needed: O(D^2)
        rho_v = None
        p = ((st.evecs.abs() ** 2) @ st.probs).reshape(dv, dh).sum(-1)
    else:
        rho_v = partial_trace_hidden(st.rho, n, m)
        pdiag = torch.diagonal(rho_v)
        p = pdiag.real if pdiag.is_complex() else pdiag
    if objective == "measured":
        q = target.to(p.dtype)
        pos = q > 0
        L = (q[pos] * torch.log(p[pos])).sum()
        xi = torch.diag(torch.where(pos, q / torch.where(pos, p, torch.ones_like(p)), torch.zeros_like(p)))
    else:
        eta = target if not classical else torch.diag(target)
        L = log_likelihood(eta, rho_v)
        mu, V = torch.linalg.eigh(rho_v)
        Fl = _log_divided_differences(mu.clamp_min(torch.finfo(mu.dtype).tiny))
        xi = V @ (Fl.to(V.dtype) * (V.mH @ _cast_hermitian(eta, V.dtype) @ V)) @ V.mH
    U = st.evecs
    lmin = st.evals.min()
    F = exp_divided_differences(st.evals, shift=lmin) / st.weights.sum()  # d exp(-H) / Z
    if objective == "measured":  # Xi (x) I is diagonal: U^H A U = (U^H * a) U
        a = torch.repeat_interleave(torch.diagonal(xi), dh).to(U.dtype)
        M = (U.mH * a[None, :]) @ U
    else:
        A = torch.kron(xi.to(U.dtype).contiguous(), torch.eye(dh, dtype=U.dtype, device=theta.device))
        M = U.mH @ A @ U
    # Tr(B O_i) with B = U (F o M) U^H, and <O_i>_rho with rho = U diag(p) U^H, from their factors
    grad = ham.term_expectations_factored(U @ (F.to(U.dtype) * M), U) + \
        ham.term_expectations_factored(U * st.probs.to(U.dtype)[None, :], U)
    return L, grad, {"p": p, "rho_v": rho_v}


def cq_log_likelihood_and_grad(ham: Hamiltonian, theta: torch.Tensor, q: torch.Tensor):
    """Exact log-likelihood gradient of a CQ model, block-wise (no dense matrices):

    ``dL/dtheta_i = -sum_v q_v <O_i>_{rho_{H|v}} + <O_i>_rho`` (Demidik et al., Prop. 3)."""
    ev = cq_evaluate(ham, theta)
    pos = q > 0
    L = (q[pos] * ev.log_probs[pos]).sum()
    return L, -ev.expectations(q) + ev.model_expectations(), {"p": ev.probs}


def bound_log_likelihood_and_grad(ham: Hamiltonian, theta: torch.Tensor, q: torch.Tensor,
                                  negative_phase: str = "dense"):
    """Bound-based QBM (Amin et al. 2018): the lower bound
    ``L~ = sum_v q_v log Tr exp(-H_v) - log Z <= sum_v q_v log p(v)`` (Golden-Thompson), with the
    clamped Hamiltonian ``H_v = <v|H|v>`` (visible X/Y terms vanish), and its gradient
    ``-sum_v q_v <O_i>_{H_v} + <O_i>_rho``. For CQ models the bound is exact.

    ``negative_phase="dense"`` computes ``<O_i>_rho`` from the dense Gibbs state (general QBM,
    as in Amin et al.'s exact simulations); ``"blocks"`` uses the CQ block form (CQ models only).
    """
    n = ham.n_visible
    key = "_clamped"
    if key not in ham._cache:  # the clamped model keeps the terms without X/Y on visible qubits
        keep = [i for i, t in enumerate(ham.terms) if all(c == "Z" for qb, c in t.ops if qb < n)]
        clamped = Hamiltonian(n, ham.n_hidden, [ham.terms[i] for i in keep], ham.coeffs[keep].tolist(),
                              [ham.names[i] for i in keep])
        ham._cache[key] = (clamped, torch.tensor(keep, dtype=torch.long))
    clamped, keep_t = ham._cache[key]
    ev = cq_evaluate(clamped, theta[keep_t.to(theta.device)])
    pos = q > 0
    pos_phase = torch.zeros_like(theta)
    pos_phase[keep_t.to(theta.device)] = ev.expectations(q)
    if negative_phase == "dense":
        st = gibbs(ham.dense(theta))
        neg = ham.term_expectations_factored(st.evecs * st.probs.to(st.evecs.dtype)[None, :], st.evecs)
        log_z = st.log_z
    elif negative_phase == "blocks":
        if not ham.is_cq:
            raise ValueError("negative_phase='blocks' needs a CQ model")
        full = cq_evaluate(ham, theta)
        neg, log_z = full.model_expectations(), full.log_z
    else:
        raise ValueError("negative_phase must be 'dense' or 'blocks'")
    bound = (q[pos] * ev.block_log_z[pos]).sum() - log_z
    return bound, -pos_phase + neg, {}


def train_gradient_ascent(
    grad_fn: Callable[[torch.Tensor], tuple],
    eval_fn: Callable[[torch.Tensor], float],
    theta0: torch.Tensor,
    n_iter: int,
    *,
    lr: float = 0.1,
    optimizer: str = "gd",
    mask: torch.Tensor | None = None,
    entropy_q: float = 0.0,
    progress: bool = False,
    desc: str = "gradient ascent",
) -> tuple[torch.Tensor, EMHistory]:
    """Generic ascent loop: ``theta += lr * grad`` (``"gd"``) or Adam/AMSGrad on ``-L``
    (``"adam"``, ``"amsgrad"``). Records ``eval_fn(theta)`` (the exact log-likelihood) and
    the cumulative time of the gradient steps in an :class:`EMHistory`
    (``relative_entropy = -entropy_q - L``)."""
    theta = torch.nn.Parameter(theta0.detach().clone())
    mk = None if mask is None else mask.to(theta.device, torch.float64)
    opt = None
    if optimizer in ("adam", "amsgrad"):
        opt = torch.optim.Adam([theta], lr=lr, amsgrad=optimizer == "amsgrad")
    elif optimizer != "gd":
        raise ValueError("optimizer must be 'gd', 'adam' or 'amsgrad'")
    hist = EMHistory()
    ll = eval_fn(theta.detach())
    hist.log_likelihood.append(ll)
    hist.relative_entropy.append(-entropy_q - ll)
    hist.time.append(0.0)
    elapsed = 0.0
    iterator = range(n_iter)
    if progress:
        from tqdm.auto import tqdm

        from qidbm.progress import tqdm_kwargs

        iterator = tqdm(iterator, desc=desc, leave=False, **tqdm_kwargs())
    for _ in iterator:
        t0 = time.perf_counter()
        with torch.no_grad():
            _, g, _ = grad_fn(theta.detach())
            if mk is not None:
                g = g * mk
            if opt is None:
                theta += lr * g
        if opt is not None:
            theta.grad = -g
            opt.step()
        elapsed += time.perf_counter() - t0
        ll = eval_fn(theta.detach())
        hist.log_likelihood.append(ll)
        hist.relative_entropy.append(-entropy_q - ll if math.isfinite(ll) else math.inf)
        hist.time.append(elapsed)
    return theta.detach().clone(), hist


def _entropy(q: torch.Tensor) -> float:
    pos = q > 0
    return float(-(q[pos] * q[pos].log()).sum())


def _exact_ll(ham: Hamiltonian, q: torch.Tensor):
    if ham.is_cq:
        def f(theta):
            ev = cq_evaluate(ham, theta, with_stats=False)
            pos = q > 0
            return float((q[pos] * ev.log_probs[pos]).sum())
    else:
        def f(theta):
            st = gibbs(ham.dense(theta))
            p = torch.diagonal(partial_trace_hidden(st.rho, ham.n_visible, ham.n_hidden))
            p = p.real if p.is_complex() else p
            pos = q > 0
            return float((q[pos] * p[pos].log()).sum())
    return f


def train_exact_gradient(ham: Hamiltonian, theta0: torch.Tensor, q: torch.Tensor, n_iter: int = 100, *,
                         lr: float = 0.1, optimizer: str = "gd", method: str = "dense",
                         mask: torch.Tensor | None = None, progress: bool = False):
    """Gradient ascent on the exact log-likelihood ``sum_v q_v log p(v)``.

    ``method="dense"``: Daleckii-Krein gradient of the dense Gibbs state (any model, all
    parameters, transverse fields included); ``"blocks"``: the block-wise CQ gradient
    (same numbers for CQ models, no dense matrices).
    """
    if method == "dense":
        def grad_fn(t):
            return exact_log_likelihood_and_grad(ham, t, q, objective="measured")
    elif method == "blocks":
        def grad_fn(t):
            return cq_log_likelihood_and_grad(ham, t, q)
    else:
        raise ValueError("method must be 'dense' or 'blocks'")
    return train_gradient_ascent(grad_fn, _exact_ll(ham, q), theta0, n_iter, lr=lr, optimizer=optimizer,
                                 mask=mask, entropy_q=_entropy(q), progress=progress,
                                 desc=f"exact gradient ({method})")


def train_bound_qbm(ham: Hamiltonian, theta0: torch.Tensor, q: torch.Tensor, n_iter: int = 100, *,
                    lr: float = 0.1, optimizer: str = "gd", fixed_groups: Sequence[str] | None = None,
                    negative_phase: str = "dense", progress: bool = False):
    """Bound-based QBM training (Amin et al. 2018): ascent on the Golden-Thompson bound with the
    transverse fields fixed (``fixed_groups`` defaults to every ``h_x_*`` group), as in that paper.
    The recorded likelihood is the exact one."""
    if fixed_groups is None:
        fixed_groups = [g for g in ham.groups if g.startswith("h_x")]
    mask = ham.trainable_mask(fixed_groups)

    def grad_fn(t):
        return bound_log_likelihood_and_grad(ham, t, q, negative_phase=negative_phase)

    return train_gradient_ascent(grad_fn, _exact_ll(ham, q), theta0, n_iter, lr=lr, optimizer=optimizer,
                                 mask=mask, entropy_q=_entropy(q), progress=progress, desc="bound-based QBM")

