"""Replica exchange (parallel tempering) over a ladder of machines (docs/maths.md, 'Replica exchange').

K chain sets run side by side, set k on machine ``ladder[k]``; ``ladder[0]`` is the machine to
sample. After every sweep, neighbouring sets (k, k+1) offer to swap their states, chain by chain,
and accept with the Metropolis probability of the swap under the product target
``prod_k p_k(x_k)``::

    log alpha = F_k(x_k) + F_{k+1}(x_{k+1}) - F_k(x_{k+1}) - F_{k+1}(x_k)

with ``F_k`` the marginal free energy of machine k over the classical layers (quantum layers traced
out: :meth:`~qidbm.models.base.BoltzmannMachine.marginal_free_energy`). Even pairs (0-1, 2-3, ...)
offer after even sweeps, odd pairs after odd ones. A quantum layer's Z outcome is an auxiliary
variable of the kernels, not part of ``x_C``: after the swaps it is redrawn from its exact
conditional on every machine, so the exact kernel's extended target stays invariant.

Two ladders:

* :func:`tempered_machine`: ``p_beta(x) ∝ <x| e^{-beta H} |x>`` over inverse temperatures
  ``1 = beta_0 > beta_1 > ...`` (Swendsen and Wang 1986; for RBMs Desjardins et al. 2010): hot
  machines cross between modes and hand their states down;
* :func:`field_scaled_machine`: the transverse fields scaled by ``1 = s_0, s_1, ...``
  (``s = 0``: the classical twin). No paper has this ladder; it asks whether the quantum
  term helps chains move between modes.

The exchange is exact for kernels whose stationary distribution is ``p_k`` (block Gibbs on
classical machines, :class:`~qidbm.samplers.kernels.ExactStep` on quantum ones); with the paper's
step it is as approximate as that step.
"""

from __future__ import annotations

import copy
import math
from itertools import pairwise
from typing import Sequence

import torch
from torch import Tensor

from qidbm.models.base import BoltzmannMachine, State
from qidbm.precision import matmul_precision
from qidbm.samplers.chain import ChainStats, bernoulli
from qidbm.samplers.kernels import BlockGibbsKernel


def check_ladder(values: Sequence[float], name: str, allow_zero: bool) -> list[float]:
    """``values`` as floats if they form a ladder (1 first, strictly decreasing, within (0, 1] or
    [0, 1]); a ``ValueError`` naming ``name`` otherwise."""
    vals = [float(x) for x in values]
    if len(vals) < 2:
        raise ValueError(f"a replica ladder needs at least two {name}, got {vals}")
    if vals[0] != 1.0:
        raise ValueError(f"the first {name[:-1]} must be 1 (the machine to sample), got {vals[0]}")
    low = 0.0 if allow_zero else math.ulp(0.0)
    if any(not (low <= x <= 1.0) or math.isnan(x) for x in vals):
        raise ValueError(f"{name} must lie in {'[0, 1]' if allow_zero else '(0, 1]'}, got {vals}")
    if any(b >= a for a, b in pairwise(vals)):
        raise ValueError(f"{name} must decrease strictly from 1, got {vals}")
    return vals


@torch.no_grad()
def tempered_machine(model: BoltzmannMachine, beta: float) -> BoltzmannMachine:
    """A copy of ``model`` at inverse temperature ``beta``: its Hamiltonian is ``beta H``.

    ``H`` is linear in the weights, biases, transverse parameters and couplings, so a binary
    machine scales all of them by ``beta``. A Gaussian visible layer enters as
    ``(v - mu)^2 / (2 s^2) - (v / s^2)^T W x_1``: there ``s^2 -> s^2 / beta`` and ``mu`` and
    every product that reads ``v / s^2`` (``W_0``, the transverse couplings to ``v``) stay.
    """
    if not 0.0 < float(beta) <= 1.0:
        raise ValueError(f"beta must lie in (0, 1], got {beta}")
    return _scale_to_beta(copy.deepcopy(model), beta)


@torch.no_grad()
def _scale_to_beta(m: BoltzmannMachine, beta: float) -> BoltzmannMachine:
    """Multiply ``m``'s Hamiltonian by ``beta`` in place (see :func:`tempered_machine`); returns ``m``."""
    g = m.gaussian_visible
    for k in range(m.num_layers - 1):
        if not (g and k == 0):
            m.layer_weight(k).mul_(beta)
    for l in range(m.num_layers):
        if not (g and l == 0):
            m.layer_bias(l).mul_(beta)
    for q in m.quantum_layers:
        m.transverse_parameter(q).mul_(beta)
        for nb in (q - 1, q + 1):
            U = m.transverse_coupling(q, nb) if 0 <= nb < m.num_layers else None
            if U is not None and not (g and nb == 0):
                U.mul_(beta)
    if g:
        m.log_variance.sub_(math.log(beta))
    return m


def annealing_betas(beta_first: float, num_sweeps: int) -> list[float]:
    """Inverse temperatures of an annealed chain: ``num_sweeps`` values rising geometrically from
    ``beta_first`` to 1, ``beta_t = beta_first ** ((k - t) / (k - 1))`` for sweeps ``t = 1..k``."""
    if not 0.0 < float(beta_first) <= 1.0 or math.isnan(beta_first):
        raise ValueError(f"the first sweep's inverse temperature must lie in (0, 1], got {beta_first}")
    if num_sweeps < 1:
        raise ValueError(f"an annealed chain needs at least one sweep, got {num_sweeps}")
    k = int(num_sweeps)
    return [1.0] if k == 1 else [float(beta_first) ** ((k - t) / (k - 1)) for t in range(1, k + 1)]


@torch.no_grad()
def annealed_run(model: BoltzmannMachine, kernel: BlockGibbsKernel, state: State, betas: Sequence[float],
                 generator: torch.Generator | None = None) -> tuple[State, ChainStats]:
    """One sweep of ``kernel`` per inverse temperature in ``betas``, sweep t on ``tempered_machine(model,
    betas[t])`` (simulated annealing of the chains from a noise start: hot sweeps cross between modes,
    the last ones settle at ``beta = 1``). ``state`` is not modified.

    One copy of the machine serves every temperature below 1 (its parameters are reset from ``model``
    and rescaled per sweep), so a call costs one copy and a scaled parameter set per hot sweep.
    """
    betas = [float(b) for b in betas]
    if any(not 0.0 < b <= 1.0 for b in betas):
        raise ValueError(f"inverse temperatures must lie in (0, 1], got {betas}")
    hot = copy.deepcopy(model) if any(b < 1.0 for b in betas) else None
    stats = ChainStats()
    for b in betas:
        m = model
        if b < 1.0:
            for p_hot, p in zip(hot.parameters(), model.parameters()):
                p_hot.copy_(p)
            m = _scale_to_beta(hot, b)
        state, s = kernel.run(m, state, 1, generator=generator)
        stats.merge(s)
    return state, stats


@torch.no_grad()
def field_scaled_machine(model: BoltzmannMachine, scale: float) -> BoltzmannMachine:
    """A copy of ``model`` with every transverse field scaled: ``Gamma(x) -> scale Gamma(x)``
    (the transverse parameters and couplings times ``scale``); ``scale = 0`` is the classical twin."""
    if not model.quantum_layers:
        raise ValueError("a transverse-field ladder needs a quantum machine (QRBM, QGRBM or QiDBM)")
    if not 0.0 <= float(scale) <= 1.0:
        raise ValueError(f"scale must lie in [0, 1], got {scale}")
    m = copy.deepcopy(model)
    for q in m.quantum_layers:
        m.transverse_parameter(q).mul_(scale)
        for nb in (q - 1, q + 1):
            U = m.transverse_coupling(q, nb) if 0 <= nb < m.num_layers else None
            if U is not None:
                U.mul_(scale)
    return m


class ReplicaExchange:
    """Parallel tempering over ``ladder`` (machines, ``ladder[0]`` the target) with ``kernel``.

    Build it with :meth:`temperatures` (inverse temperatures) or :meth:`field_scales`
    (transverse-field scales); :meth:`refresh` rebuilds the ladder after the machine changed.
    """

    def __init__(self, ladder: Sequence[BoltzmannMachine], kernel: BlockGibbsKernel) -> None:
        if len(ladder) < 2:
            raise ValueError("replica exchange needs at least two machines")
        self.ladder = list(ladder)
        self.kernel = kernel
        self._rebuild = None

    @classmethod
    def temperatures(cls, model: BoltzmannMachine, betas: Sequence[float], kernel: BlockGibbsKernel) -> ReplicaExchange:
        """Replicas at inverse temperatures ``betas`` (``1 = betas[0] > betas[1] > ... > 0``)."""
        return cls._ladder_of(model, check_ladder(betas, "betas", allow_zero=False), tempered_machine, kernel)

    @classmethod
    def field_scales(cls, model: BoltzmannMachine, scales: Sequence[float], kernel: BlockGibbsKernel) -> ReplicaExchange:
        """Replicas with transverse fields scaled by ``scales`` (``1 = scales[0] > ... >= 0``)."""
        return cls._ladder_of(model, check_ladder(scales, "scales", allow_zero=True), field_scaled_machine, kernel)

    @classmethod
    def _ladder_of(cls, model, values: list[float], transform, kernel) -> ReplicaExchange:
        def build(m):
            return [m] + [transform(m, x) for x in values[1:]]

        rx = cls(build(model), kernel)
        rx._rebuild = build
        return rx

    def refresh(self, model: BoltzmannMachine) -> None:
        """Rebuild the ladder from ``model`` (after a parameter update)."""
        if self._rebuild is None:
            raise ValueError("this ReplicaExchange was built from explicit machines; build it with temperatures() or field_scales()")
        self.ladder = self._rebuild(model)

    def initial_states(self, num_chains: int, generator: torch.Generator | None = None) -> list[State]:
        """Independent random states for every replica."""
        return [m.random_state(num_chains, generator) for m in self.ladder]

    def _free_energy(self, k: int, state: State) -> Tensor:
        m = self.ladder[k]
        # float32 products even inside a bfloat16 context: log alpha is a difference of four free
        # energies of order 1e3, and bfloat16 outputs (8-bit mantissa) blur each by up to half a nat
        # (0.14 on average for the tempered DBM of docs/training.md)
        with matmul_precision("float32"):
            return m.marginal_free_energy(state, summed=m.quantum_layers)

    @torch.no_grad()
    def run(
        self,
        states: Sequence[State],
        num_steps: int,
        generator: torch.Generator | None = None,
        progress: bool = False,
        first_round: int = 0,
    ) -> tuple[list[State], ChainStats]:
        """``num_steps`` rounds of (one sweep per replica, swaps between neighbours); the inputs
        are not modified. Rounds are numbered from ``first_round`` (even rounds offer the pairs 0-1,
        2-3, ..., odd ones 1-2, 3-4, ...), so a run continued in pieces alternates as one run does. Returns every replica's state (``[0]``: the target's) and the statistics
        of the target's kernel and of the swaps (:meth:`~qidbm.samplers.chain.ChainStats.swap_rates`)."""
        if len(states) != len(self.ladder):
            raise ValueError(f"got {len(states)} replica states for a ladder of {len(self.ladder)} machines")
        states = [list(s) for s in states]
        stats = ChainStats()
        steps = range(num_steps)
        if progress:
            from tqdm.auto import tqdm

            from qidbm.progress import tqdm_kwargs

            steps = tqdm(steps, desc=f"replica exchange ({len(self.ladder)} replicas)", leave=False, **tqdm_kwargs())
        for t in steps:
            for k, m in enumerate(self.ladder):
                states[k], s = self.kernel.run(m, states[k], 1, generator=generator)
                if k == 0:
                    stats.merge(s)
            self._swap(states, parity=(first_round + t) % 2, generator=generator, stats=stats)
        return states, stats

    def _swap(self, states: list[State], parity: int, generator, stats: ChainStats) -> None:
        for k in range(parity, len(self.ladder) - 1, 2):
            a, b = states[k], states[k + 1]
            log_alpha = (self._free_energy(k, a) + self._free_energy(k + 1, b)
                         - self._free_energy(k, b) - self._free_energy(k + 1, a))
            u = torch.rand(log_alpha.shape, generator=generator, device=log_alpha.device, dtype=log_alpha.dtype)
            accept = torch.log(u) < log_alpha
            w = accept[:, None].to(a[0].dtype)
            states[k] = [torch.lerp(x, y, w) for x, y in zip(a, b)]
            states[k + 1] = [torch.lerp(y, x, w) for x, y in zip(a, b)]
            stats.record_swaps(k, accept)
        # the quantum layers' Z outcomes are auxiliaries: redraw them from each machine's conditional
        for k, m in enumerate(self.ladder):
            for q in m.quantum_layers:
                states[k][q] = bernoulli(m.conditional(q, states[k])[0], generator)
