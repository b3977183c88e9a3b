"""DO-EM (Algorithms 1 and 2 of the DO-EM paper) and the em algorithm of Kimura et al.

For a Hamiltonian model ``rho_theta = exp(-H_theta)/Z(theta)``, ``H_theta = sum_i theta_i O_i``:

* E-step: ``eta_VH = P(eta_V)``, the Petz recovery map of the partial trace w.r.t. the
  current model (the QIP solution under Condition S, DO-EM Theorem 4.3). For CQ models
  on diagonal data ``eta_V = sum_v q_v |v><v|`` it is ``sum_v q_v |v><v| (x) rho_{H|v}``,
  ``rho_{H|v} = exp(-H_v)/Tr exp(-H_v)`` (Theorem 5.1, Lemma 5.4): Algorithm 2.
* M-step: maximise the concave
  ``Q(theta) = -Tr(eta_VH H_theta) - log Z(theta) = -theta . e - log Z(theta)``,
  ``e_i = Tr(eta_VH O_i)``; ``grad Q = -e + <O>_{rho_theta}`` (Corollary 4.6). ``Q`` differs
  from the QELBO by ``S(eta_VH) - S(eta_V)``, a constant in theta.

Under Condition S the log-likelihood ``Tr eta_V log rho_V`` never decreases (Corollary 4.5).
The M-step solvers (:func:`maximize_concave`) start at theta_t and only accept steps that
increase Q (strong-Wolfe / Armijo), so ascent holds at any tolerance.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .hamiltonians import Hamiltonian
from .petz import log_likelihood, petz_recovery
from .states import (
    cq_evaluate,
    gibbs,
    partial_trace_hidden,
    von_neumann_entropy,
)

__all__ = [
    "MStepResult",
    "maximize_concave",
    "EMHistory",
    "cq_estep_statistics",
    "cq_mstep_objective",
    "dense_mstep_objective",
    "do_em_cq",
    "do_em_dense",
    "kimura_em",
    "cq_log_likelihood",
]


@dataclass
class MStepResult:
    """Result of one concave maximisation: final theta, objective, max|grad|, iterations, evaluations."""

    theta: torch.Tensor
    objective: float
    grad_max: float
    iterations: int
    evaluations: int
    converged: bool


def maximize_concave(
    fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    theta0: torch.Tensor,
    *,
    method: str = "lbfgs",
    tol: float = 1e-8,
    max_iter: int = 200,
    lr: float = 0.1,
    mask: torch.Tensor | None = None,
) -> MStepResult:
    """Maximise a concave ``f`` given ``fn(theta) -> (f, grad f)``, starting at ``theta0``.

    ``method``:
      * ``"lbfgs"``: ``torch.optim.LBFGS`` with ``line_search_fn="strong_wolfe"``, stopped when
        ``max|grad| <= tol`` (its ``tolerance_grad``) or after ``max_iter`` iterations;
      * ``"gd_backtracking"``: gradient ascent with an Armijo backtracking line search
        (``f(theta + t g) >= f(theta) + t/2 ||g||^2``, or ``grad f(theta + t g) . g >= 0`` which for
        concave f also proves ascent; t halved on failure, doubled on success);
      * ``"gd"``: fixed-step gradient ascent ``theta += lr * grad`` (Kimura et al.'s m-step).
    ``mask`` (bool, per parameter) freezes the parameters where it is False.
    """
    theta0 = theta0.detach().clone()
    m = None if mask is None else mask.to(theta0.device, torch.float64)

    def masked(g):
        return g if m is None else g * m

    if method == "lbfgs":
        p = torch.nn.Parameter(theta0.clone())
        opt = torch.optim.LBFGS([p], lr=1.0, max_iter=max_iter, max_eval=max_iter * 5, tolerance_grad=tol,
                                tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            with torch.no_grad():
                f, g = fn(p.detach())
            p.grad = -masked(g).detach().clone()
            return -f.detach()

        opt.step(closure)
        st = opt.state[p]
        with torch.no_grad():
            f, g = fn(p.detach())
        gmax = float(masked(g).abs().max()) if g.numel() else 0.0
        n_it, n_ev = int(st.get("n_iter", 0)), int(st.get("func_evals", 0)) + 1
        if gmax > tol and n_it < max_iter:
            # L-BFGS stops when f stops changing in float64 (|grad| ~ 1e-9 for f = O(1));
            # finish with slope-tested gradient steps, which do not need f differences.
            res = maximize_concave(fn, p.detach(), method="gd_backtracking", tol=tol, max_iter=max_iter - n_it,
                                   lr=1.0, mask=mask)
            return MStepResult(res.theta, res.objective, res.grad_max, n_it + res.iterations,
                               n_ev + res.evaluations, res.converged)
        return MStepResult(p.detach().clone(), float(f), gmax, n_it, n_ev, gmax <= tol)
    if method not in ("gd", "gd_backtracking"):
        raise ValueError("method must be 'lbfgs', 'gd_backtracking' or 'gd'")
    theta = theta0
    f, g = fn(theta)
    g = masked(g)
    evals, it, step = 1, 0, lr
    while it < max_iter and float(g.abs().max()) > tol:
        if method == "gd":
            theta = theta + lr * g
            f, g = fn(theta)
            g = masked(g)
            evals += 1
        else:
            gg = float((g * g).sum())
            while True:
                cand = theta + step * g
                fc, gc = fn(cand)
                evals += 1
                # Armijo, or (for concave f) a non-negative slope at the candidate, which proves
                # f(cand) > f(theta) even when the increase is below round-off in f.
                if float(fc) >= float(f) + 0.5 * step * gg or float((masked(gc) * g).sum()) >= 0:
                    break
                step *= 0.5
                if step < 1e-30:
                    break
            if step < 1e-30:  # no ascent step found: stationary to round-off
                break
            theta, f, g = cand, fc, masked(gc)
            step *= 2.0
        it += 1
    gmax = float(g.abs().max()) if g.numel() else 0.0
    return MStepResult(theta.detach().clone(), float(f), gmax, it, evals, gmax <= tol)


@dataclass
class EMHistory:
    """Per-iteration record of an EM run (index 0 = the initial parameters).

    ``log_likelihood`` = Tr eta_V log rho_V; ``relative_entropy`` = D(eta_V||rho_V);
    ``qelbo`` = QELBO at the E-step extension before the M-step; ``m_step_iterations`` /
    ``m_step_evaluations`` of the concave solver; ``time`` seconds since start (E+M steps
    only, likelihood bookkeeping excluded).
    """

    log_likelihood: list[float] = field(default_factory=list)
    relative_entropy: list[float] = field(default_factory=list)
    qelbo: list[float] = field(default_factory=list)
    m_step_iterations: list[int] = field(default_factory=list)
    m_step_evaluations: list[int] = field(default_factory=list)
    m_step_converged: list[bool] = field(default_factory=list)
    time: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items()}


# --------------------------------------------------------------------------- Algorithm 2 (CQ)
def _check_q(q: torch.Tensor, n_visible: int) -> torch.Tensor:
    q = torch.as_tensor(q)
    if q.dtype != torch.float64:
        raise TypeError("the data distribution q must be float64")
    if q.shape != (2**n_visible,):
        raise ValueError(f"q must have shape ({2**n_visible},) (one entry per visible basis state), got {tuple(q.shape)}")
    if (q < 0).any() or abs(float(q.sum()) - 1.0) > 1e-9:
        raise ValueError("q must be a probability vector (non-negative, summing to 1)")
    return q


def cq_log_likelihood(ham: Hamiltonian, theta: torch.Tensor, q: torch.Tensor) -> float:
    """``sum_v q_v log p_theta(v)`` for a CQ model (= Tr eta_V log rho_V for diagonal eta_V)."""
    ev = cq_evaluate(ham, theta, with_stats=False)
    pos = q > 0
    return float((q[pos] * ev.log_probs[pos]).sum())


def cq_estep_statistics(ham: Hamiltonian, theta: torch.Tensor, q: torch.Tensor):
    """Algorithm 2 E-step: ``e_i = sum_v q_v Tr(rho_{H|v,theta} O_i(v))`` and the evaluation.

    The posterior ``rho_{H|v}`` is the model's own block state given v (Lemma 5.4).
    """
    ev = cq_evaluate(ham, theta)
    return ev.expectations(q), ev


def cq_mstep_objective(ham: Hamiltonian, e: torch.Tensor):
    """``Q(theta) = -theta.e - log Z(theta)`` and its gradient ``-e + <O>_theta`` (block-wise)."""

    def fn(theta):
        ev = cq_evaluate(ham, theta)
        return -(theta @ e) - ev.log_z, -e + ev.model_expectations()

    return fn


def _cq_posterior_entropy(ev, q: torch.Tensor) -> float:
    """``S(eta_VH) - S(eta_V) = sum_v q_v S(rho_{H|v})`` for the CQ E-step extension."""
    pos = q > 0
    st = ev.block_states[pos]
    if st.shape[-1] == 1:
        return 0.0
    return float((q[pos] * von_neumann_entropy(st)).sum())


def do_em_cq(
    ham: Hamiltonian,
    theta0: torch.Tensor,
    q: torch.Tensor,
    n_iter: int = 50,
    *,
    m_step: str = "lbfgs",
    m_tol: float = 1e-8,
    m_max_iter: int = 200,
    lr: float = 0.1,
    mask: torch.Tensor | None = None,
    entropy_q: float | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, EMHistory]:
    """DO-EM Algorithm 2: CQ model, classical data ``q`` (a distribution over visible basis states).

    Each iteration: E-step statistics ``e = sum_v q_v <O>_{rho_{H|v}}`` (block-wise), then
    the concave M-step by :func:`maximize_concave` (``m_step``, ``m_tol``, ``m_max_iter``,
    ``lr``). Returns the final parameters and an :class:`EMHistory` whose
    ``relative_entropy`` is ``KL(q || p_theta)``.
    """
    if not ham.is_cq:
        raise ValueError("Algorithm 2 needs a CQ model (no X/Y on visible qubits); use do_em_dense")
    q = _check_q(q, ham.n_visible).to(theta0.device)
    pos = q > 0
    s_q = float(-(q[pos] * q[pos].log()).sum()) if entropy_q is None else entropy_q
    theta = theta0.detach().clone()
    hist = EMHistory()
    elapsed = 0.0
    ll = cq_log_likelihood(ham, theta, q)
    hist.log_likelihood.append(ll)
    hist.relative_entropy.append(-s_q - ll)
    hist.time.append(0.0)
    iterator = range(n_iter)
    if progress:
        from tqdm.auto import tqdm

        from qidbm.progress import tqdm_kwargs

        iterator = tqdm(iterator, desc="DO-EM (Alg. 2)", leave=False, **tqdm_kwargs())
    for t in iterator:
        t0 = time.perf_counter()
        e, ev = cq_estep_statistics(ham, theta, q)
        res = maximize_concave(cq_mstep_objective(ham, e), theta, method=m_step, tol=m_tol,
                               max_iter=m_max_iter, lr=lr, mask=mask)
        elapsed += time.perf_counter() - t0
        q_at_t = float(-(theta @ e) - ev.log_z)
        hist.qelbo.append(q_at_t + _cq_posterior_entropy(ev, q))
        theta = res.theta
        ll = cq_log_likelihood(ham, theta, q)
        hist.log_likelihood.append(ll)
        hist.relative_entropy.append(-s_q - ll)
        hist.m_step_iterations.append(res.iterations)
        hist.m_step_evaluations.append(res.evaluations)
        hist.m_step_converged.append(res.converged)
        hist.time.append(elapsed)
        if callback is not None:
            callback(t, theta)
    return theta, hist


def kimura_em(
    ham: Hamiltonian,
    theta0: torch.Tensor,
    q: torch.Tensor,
    n_iter: int = 50,
    *,
    inner_steps: int = 10,
    lr: float = 0.1,
    m_tol: float = 0.0,
    **kw,
) -> tuple[torch.Tensor, EMHistory]:
    """The em algorithm of Kimura, Kato and Hayashi for the sqRBM: e-projection
    ``rho_{H|V} = rho_{H|V,theta_t}`` and an m-projection by ``inner_steps`` fixed-step gradient
    steps ``theta += lr (-e + <O>_theta)``. This is DO-EM Algorithm 2 with ``m_step="gd"``.
    """
    return do_em_cq(ham, theta0, q, n_iter, m_step="gd", m_tol=m_tol, m_max_iter=inner_steps, lr=lr, **kw)


# --------------------------------------------------------------------------- Algorithm 1 (dense)
def dense_mstep_objective(ham: Hamiltonian, e: torch.Tensor):
    """``Q(theta) = -theta.e - log Z(theta)`` with a dense eigendecomposition per evaluation."""

    def fn(theta):
        st = gibbs(ham.dense(theta))
        return -(theta @ e) - st.log_z, -e + ham.term_expectations(st.rho)

    return fn


def do_em_dense(
    ham: Hamiltonian,
    theta0: torch.Tensor,
    eta_v: torch.Tensor,
    n_iter: int = 20,
    *,
    m_step: str = "lbfgs",
    m_tol: float = 1e-8,
    m_max_iter: int = 200,
    lr: float = 0.1,
    mask: torch.Tensor | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, EMHistory]:
    """DO-EM Algorithm 1 for any Hamiltonian model and any target density operator ``eta_V``.

    E-step: ``eta_VH = P_{sigma_theta_t}(eta_V)`` (Petz recovery map); M-step: maximise
    ``-Tr(eta_VH H_theta) - log Z(theta)``. Likelihood ascent is guaranteed under Condition S
    (Corollary 4.5; CQ models with diagonal data); otherwise the map is still applied
    as the E-step, but ascent is not guaranteed.
    """
    n, m = ham.n_visible, ham.n_hidden
    eta_v = eta_v.to(theta0.device)
    s_eta = float(von_neumann_entropy(eta_v))
    theta = theta0.detach().clone()
    hist = EMHistory()
    st = gibbs(ham.dense(theta))
    ll = float(log_likelihood(eta_v, partial_trace_hidden(st.rho, n, m)))
    hist.log_likelihood.append(ll)
    hist.relative_entropy.append(-s_eta - ll)
    hist.time.append(0.0)
    elapsed = 0.0
    iterator = range(n_iter)
    if progress:
        from tqdm.auto import tqdm

        from qidbm.progress import tqdm_kwargs

        iterator = tqdm(iterator, desc="DO-EM (Alg. 1)", leave=False, **tqdm_kwargs())
    for _ in iterator:
        t0 = time.perf_counter()
        eta_vh = petz_recovery(eta_v, st, n, m)
        e = ham.term_expectations(eta_vh)
        res = maximize_concave(dense_mstep_objective(ham, e), theta, method=m_step, tol=m_tol,
                               max_iter=m_max_iter, lr=lr, mask=mask)
        elapsed += time.perf_counter() - t0
        cross = float(-(theta @ e) - st.log_z)
        hist.qelbo.append(cross + float(von_neumann_entropy(eta_vh)) - s_eta)
        theta = res.theta
        st = gibbs(ham.dense(theta))
        ll = float(log_likelihood(eta_v, partial_trace_hidden(st.rho, n, m)))
        hist.log_likelihood.append(ll)
        hist.relative_entropy.append(-s_eta - ll if math.isfinite(ll) else math.inf)
        hist.m_step_iterations.append(res.iterations)
        hist.m_step_evaluations.append(res.evaluations)
        hist.m_step_converged.append(res.converged)
        hist.time.append(elapsed)
    return theta, hist
