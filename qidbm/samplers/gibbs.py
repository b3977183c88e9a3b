"""Block Gibbs samplers for layered (quantum) Boltzmann machines (docs/maths.md, 'Samplers').

One sweep updates the odd layers given the even ones, then the even layers given
the odd ones, every chain in parallel. Quantum layers are drawn in the Z basis
with the closed-form ``P(n = 1)`` of :mod:`qidbm.quantum`. Two quantum steps:

* ``"paper"`` (the DO-EM paper's step): the classical layers are then drawn from
  their classical conditionals with the 0/1 outcome ``n`` in place of the quantum
  layer. For Gamma != 0 this chain's stationary distribution is NOT p(x_C).
* ``"exact"``: a Metropolis-corrected step on the extended target
  ``pi(x_C, n) = p(x_C) prod_j P(n_j | phi_j(x_C), Gamma_j(x_C))`` whose x_C-marginal is
  exactly p(x_C). n is drawn exactly given x_C; the classical layers next to a quantum
  layer are proposed from the same classical conditionals and accepted with
  ``log alpha = a(x') - a(x)``, ``a(x) = sum_q sum_j [log Tr e^{-H_qj} + log P(n_qj | x) - phi_qj(x) n_qj]``
  (:func:`qidbm.quantum.qubit_metropolis_weight`)
  (every other term of ``log pi - log q`` cancels). At Gamma = 0, ``a`` is constant
  and every proposal is accepted: classical block Gibbs.

Gaussian visible layers are drawn from ``N(mu + W h, s^2)`` (``visible_step="gibbs"``) or
moved by Langevin steps on ``-log p(v | h)`` (``"langevin"``, Liao et al. 2022's
Gibbs-Langevin; with ``langevin_adjust`` each step is Metropolis-adjusted, so the
kernel stays exact).
"""

from __future__ import annotations

from typing import Iterable, Literal, Sequence

import torch
from torch import Tensor

from qidbm.models.base import BoltzmannMachine, State
from qidbm.quantum import qubit_metropolis_weight, qubit_prob_one

QuantumStep = Literal["paper", "exact"]
VisibleStep = Literal["gibbs", "langevin"]


def bernoulli(p: Tensor, generator: torch.Generator | None) -> Tensor:
    """0/1 draws with probabilities p (same dtype as p)."""
    return (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).to(p.dtype)


class GibbsSampler:
    """Block Gibbs sampler with a choice of quantum step; see the module docstring.

    The sampler is stateless apart from acceptance counters: ``acceptance()`` returns
    the mean acceptance of the Metropolis step per quantum layer since the last
    ``reset_acceptance()`` (as device tensors; no host synchronisation while sampling).
    """

    def __init__(
        self,
        quantum_step: QuantumStep = "paper",
        visible_step: VisibleStep = "gibbs",
        langevin_steps: int = 10,
        langevin_step_size: float = 0.1,
        langevin_adjust: bool = True,
    ) -> None:
        if quantum_step not in ("paper", "exact"):
            raise ValueError(f"quantum_step must be 'paper' or 'exact', got {quantum_step!r}")
        if visible_step not in ("gibbs", "langevin"):
            raise ValueError(f"visible_step must be 'gibbs' or 'langevin', got {visible_step!r}")
        if langevin_steps < 1 or langevin_step_size <= 0:
            raise ValueError("langevin_steps must be >= 1 and langevin_step_size > 0")
        self.quantum_step = quantum_step
        self.visible_step = visible_step
        self.langevin_steps = int(langevin_steps)
        self.langevin_step_size = float(langevin_step_size)
        self.langevin_adjust = bool(langevin_adjust)
        self._accept_sum: dict[int, Tensor] = {}
        self._accept_count: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"GibbsSampler(quantum_step={self.quantum_step!r}, visible_step={self.visible_step!r})"

    # ------------------------------------------------------------------ acceptance bookkeeping
    def reset_acceptance(self) -> None:
        self._accept_sum.clear()
        self._accept_count.clear()

    def acceptance(self) -> dict[int, Tensor]:
        """Mean acceptance rate per quantum layer (exact step only) since the last reset."""
        return {l: self._accept_sum[l] / self._accept_count[l] for l in self._accept_sum}

    def _record(self, layers: Iterable[int], accepted: Tensor) -> None:
        s = accepted.to(torch.float64).sum()
        for l in layers:
            self._accept_sum[l] = self._accept_sum.get(l, 0) + s
            self._accept_count[l] = self._accept_count.get(l, 0) + accepted.numel()

    # ------------------------------------------------------------------ sweeps
    @torch.no_grad()
    def run(
        self,
        model: BoltzmannMachine,
        state: State,
        num_steps: int,
        clamped: Iterable[int] = (),
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> State:
        """``num_steps`` sweeps from ``state`` (not modified in place); layers in ``clamped`` stay fixed."""
        if self.quantum_step == "exact" and self.visible_step == "langevin" and model.gaussian_visible:
            raise ValueError(
                "the exact quantum step proposes visibles from their Gaussian conditional; "
                "use visible_step='gibbs' with quantum_step='exact'"
            )
        state = list(state)
        clamped = frozenset(clamped)
        cache: dict[int, tuple[Tensor, Tensor]] = {}
        steps: Iterable[int] = range(num_steps)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="Gibbs sweeps", leave=False)
        for _ in steps:
            self._sweep(model, state, clamped, generator, cache)
        return state

    @torch.no_grad()
    def run_half_sweeps(
        self,
        model: BoltzmannMachine,
        state: State,
        parities: Sequence[int],
        clamped: Iterable[int] = (),
        generator: torch.Generator | None = None,
    ) -> State:
        """Update the odd (parity 1) or even (parity 0) layers in the given order.

        ``run(n)`` is ``run_half_sweeps([1, 0] * n)``. Any alternating order is a valid block
        Gibbs chain; PCD training uses ``[0] + [1, 0] * (k - 1)`` and draws the last odd half
        from the fields its free energy computes anyway (one product fewer per step).
        """
        state = list(state)
        clamped = frozenset(clamped)
        cache: dict[int, tuple[Tensor, Tensor]] = {}
        for parity in parities:
            if parity not in (0, 1):
                raise ValueError(f"parities must be 0 (even layers) or 1 (odd layers), got {parity!r}")
            self._half_sweep(model, state, parity, clamped, generator, cache)
        return state

    def sweep(
        self,
        model: BoltzmannMachine,
        state: State,
        clamped: Iterable[int] = (),
        generator: torch.Generator | None = None,
    ) -> State:
        """One sweep (odd layers, then even layers)."""
        return self.run(model, state, 1, clamped, generator)

    def _sweep(self, model, state: State, clamped, generator, cache) -> None:
        for parity in (1, 0):
            self._half_sweep(model, state, parity, clamped, generator, cache)

    def _half_sweep(self, model, state: State, parity: int, clamped, generator, cache) -> None:
        Q = set(model.quantum_layers)
        block = [l for l in range(parity, model.num_layers, 2) if l not in clamped]
        if not block:
            return
        exact = self.quantum_step == "exact"
        mh = [l for l in block if l not in Q and ((l - 1) in Q or (l + 1) in Q)] if exact else []
        # layers of one block are conditionally independent: draw them in index order
        for l in block:
            if l in Q:
                # In the exact step the cached field of q is always current: q's neighbours
                # only move through the Metropolis block, which updates the cache.
                if exact and l in cache:
                    phi, g = cache[l]
                else:
                    phi, g = model.preactivation(l, state), model.field(l, state)
                    if exact:
                        cache[l] = (phi, g)
                state[l] = bernoulli(qubit_prob_one(phi, g), generator)
            elif l not in mh:
                state[l] = self._draw_classical(model, l, state, generator)
        if mh:
            self._metropolis_block(model, state, mh, Q, generator, cache)

    def _draw_classical(self, model, l: int, state: State, generator) -> Tensor:
        if l == 0 and model.gaussian_visible:
            mean = model.preactivation(0, state)
            if self.visible_step == "langevin":
                return self._langevin(model, state[0], mean, generator)
            std = model.visible_std
            return mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return bernoulli(torch.sigmoid(model.preactivation(l, state)), generator)

    def _langevin(self, model, v: Tensor, mean: Tensor, generator) -> Tensor:
        """Langevin moves on ``log p(v | h) = -(v - mean)^2 / 2 s^2``; MALA-adjusted if asked."""
        var = torch.exp(model.log_variance)
        eta = self.langevin_step_size * var.mean()
        for _ in range(self.langevin_steps):
            grad = -(v - mean) / var
            noise = torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
            prop = v + eta * grad + torch.sqrt(2 * eta) * noise
            if self.langevin_adjust:
                grad_p = -(prop - mean) / var
                log_t = lambda x: -(((x - mean) ** 2) / (2 * var)).sum(-1)  # noqa: E731
                log_q_fwd = -((prop - v - eta * grad) ** 2).sum(-1) / (4 * eta)
                log_q_bwd = -((v - prop - eta * grad_p) ** 2).sum(-1) / (4 * eta)
                log_alpha = log_t(prop) - log_t(v) + log_q_bwd - log_q_fwd
                u = torch.rand(log_alpha.shape, generator=generator, device=v.device, dtype=v.dtype)
                acc = torch.log(u) < log_alpha
                v = torch.where(acc[:, None], prop, v)
            else:
                v = prop
        return v

    def _metropolis_block(self, model, state: State, mh: list[int], Q: set[int], generator, cache) -> None:
        """Propose the layers ``mh`` from their classical conditionals given n; accept jointly per chain."""
        qs = sorted({q for l in mh for q in (l - 1, l + 1) if q in Q})
        for q in qs:
            if q not in cache:
                cache[q] = (model.preactivation(q, state), model.field(q, state))
        old = {l: state[l] for l in mh}
        new = {l: self._draw_classical(model, l, state, generator) for l in mh}
        proposed = list(state)
        for l in mh:
            proposed[l] = new[l]
        log_alpha = 0.0
        new_cache = {}
        for q in qs:
            n = state[q]
            phi0, g0 = cache[q]
            phi1, g1 = model.preactivation(q, proposed), model.field(q, proposed)
            new_cache[q] = (phi1, g1)
            a1 = qubit_metropolis_weight(n, phi1, g1)
            a0 = qubit_metropolis_weight(n, phi0, g0)
            log_alpha = log_alpha + (a1 - a0).sum(-1)
        ref = state[mh[0]]
        u = torch.rand(ref.shape[0], generator=generator, device=ref.device, dtype=ref.dtype)
        accept = torch.log(u) < log_alpha
        # per-chain selection by lerp with a 0/1 weight (exact; a vectorised kernel, unlike where)
        a = accept[:, None].to(ref.dtype)
        for l in mh:
            state[l] = torch.lerp(old[l], new[l], a)
        for q in qs:
            (p0, f0), (p1, f1) = cache[q], new_cache[q]
            cache[q] = (torch.lerp(p0, p1, a), f0 if f0.shape != p0.shape else torch.lerp(f0, f1, a))
        self._record(qs, accept)
