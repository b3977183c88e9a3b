"""The chains of Taniguchi et al. (2023), "End-to-end training of deep Boltzmann machines by
unbiased contrastive divergence with local mode initialization" (reference code: github
iShohei220/unbiased_dbm, ``model.py``), for any layered machine of this package.

A chain of their estimator, with v clamped in the positive phase:

1. every unclamped layer starts from uniform noise;
2. :func:`local_search`: zero-temperature block updates ``x_l <- 1[P(x_l = 1 | neighbours) > 1/2]``
   (a quantum layer through its closed form ``P(n = 1)``; a Gaussian visible layer to its
   conditional mean), the even or the odd block first as drawn once per chain, repeated until a
   sweep changes nothing: a local mode;
3. :func:`random_order_gibbs_sweep`: one sweep of a kernel (:mod:`qidbm.samplers.kernels`), its block
   order drawn per chain (their quantum layers: the DO-EM paper's Z-basis step, :class:`PaperStep`);
4. :func:`coupling`: Metropolis-Hastings steps whose proposal draws every unclamped classical layer
   uniformly at random, independently of the current state, repeated until a step is rejected.
   The target is ``exp(-F_Q(x))``, the energy with the quantum layers traced out in closed form
   (for a classical machine, the energy itself).

Their code accumulates ``E(x_0) + sum_t [E(x_{t+1}) - E(x_t)]`` along step 4, which telescopes to the
energy of the final state: the loss is ``mean F_Q(x_final^+) - mean F_Q(x_final^-)``.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from qidbm.models.base import BoltzmannMachine, State
from qidbm.samplers.chain import ChainStats, bernoulli
from qidbm.samplers.kernels import BlockGibbsKernel


def random_orders(num_chains: int, generator: torch.Generator | None, device) -> Tensor:
    """One fair coin per chain: True = the even block (layers 0, 2, ...) first."""
    return torch.rand(num_chains, generator=generator, device=device) < 0.5


def _parity_order(even_first: bool) -> tuple[int, int]:
    return (0, 1) if even_first else (1, 0)


@torch.no_grad()
def _zero_temperature_block(model: BoltzmannMachine, state: State, parity: int, clamped: frozenset[int]) -> None:
    for l in range(parity, model.num_layers, 2):
        if l in clamped:
            continue
        p = model.conditional(l, state)[0]
        state[l] = p if (l == 0 and model.gaussian_visible) else (p > 0.5).to(p.dtype)


def _select_rows(state: State, rows: Tensor) -> State:
    return [x[rows] for x in state]


def _scatter_rows(state: State, rows: Tensor, part: State) -> None:
    for x, y in zip(state, part):
        x[rows] = y


@torch.no_grad()
def local_search(
    model: BoltzmannMachine,
    state: State,
    clamped: Iterable[int] = (),
    generator: torch.Generator | None = None,
    even_first: Tensor | None = None,
    max_sweeps: int = 1000,
) -> State:
    """Zero-temperature block coordinate descent of the energy from ``state`` until no unit changes
    (a local mode), the block order fixed per chain (``even_first``, drawn if None). Each sweep can
    only lower the energy, so the search ends; ``max_sweeps`` guards against ties that cycle."""
    clamped = frozenset(clamped)
    state = [x.clone() for x in state]
    n = state[0].shape[0]
    if even_first is None:
        even_first = random_orders(n, generator, state[0].device)
    for flag in (True, False):
        rows = (even_first == flag).nonzero().flatten()
        if rows.numel() == 0:
            continue
        part = _select_rows(state, rows)
        for _ in range(max_sweeps):
            before = [x.clone() for x in part]
            for parity in _parity_order(flag):
                _zero_temperature_block(model, part, parity, clamped)
            if all(torch.equal(a, b) for a, b in zip(before, part)):
                break
        _scatter_rows(state, rows, part)
    return state


@torch.no_grad()
def random_order_gibbs_sweep(
    model: BoltzmannMachine,
    state: State,
    kernel: BlockGibbsKernel,
    clamped: Iterable[int] = (),
    generator: torch.Generator | None = None,
) -> tuple[State, ChainStats]:
    """One sweep of ``kernel`` per chain, the even or the odd block first by a fair coin per chain;
    returns the new state and the statistics of its chains."""
    state = [x.clone() for x in state]
    stats = ChainStats()
    even_first = random_orders(state[0].shape[0], generator, state[0].device)
    for flag in (True, False):
        rows = (even_first == flag).nonzero().flatten()
        if rows.numel():
            part, s = kernel.run_half_sweeps(model, _select_rows(state, rows), list(_parity_order(flag)), clamped, generator)
            stats.merge(s)
            _scatter_rows(state, rows, part)
    return state, stats


@torch.no_grad()
def coupling(
    model: BoltzmannMachine,
    state: State,
    clamped: Iterable[int] = (),
    generator: torch.Generator | None = None,
    max_steps: int = 10000,
) -> tuple[State, Tensor]:
    """Metropolis-Hastings with uniform independent proposals on the unclamped classical layers,
    per chain until its first rejection (target ``exp(-F_Q)``, quantum layers traced out).

    Returns the final state and the number of accepted moves per chain. A proposal that equals the
    current state counts as "unchanged" and ends the chain, as in the reference code.
    """
    if model.gaussian_visible and 0 not in set(clamped):
        raise ValueError("coupling proposes uniform binary states; it needs binary units (or the visible layer clamped)")
    clamped = frozenset(clamped)
    q = tuple(model.quantum_layers)
    moving = [l for l in range(model.num_layers) if l not in clamped and l not in q]
    state = [x.clone() for x in state]
    n = state[0].shape[0]
    dev = state[0].device
    active = torch.ones(n, dtype=torch.bool, device=dev)
    accepted = torch.zeros(n, dtype=torch.long, device=dev)
    f_cur = model.marginal_free_energy(state, q)
    for _ in range(max_steps):
        rows = active.nonzero().flatten()
        if rows.numel() == 0:
            break
        cur = _select_rows(state, rows)
        prop = list(cur)
        for l in moving:
            prop[l] = bernoulli(torch.full_like(cur[l], 0.5), generator)
        f_prop = model.marginal_free_energy(prop, q)
        u = torch.rand(rows.numel(), generator=generator, device=dev, dtype=f_prop.dtype)
        acc = u < torch.exp(f_cur[rows] - f_prop)
        changed = torch.zeros_like(acc)
        for l in moving:
            changed |= (prop[l] != cur[l]).any(1)
        move = acc & changed
        if move.any():
            mrows = rows[move]
            _scatter_rows(state, mrows, _select_rows(prop, move.nonzero().flatten()))
            f_cur[mrows] = f_prop[move]
            accepted[mrows] += 1
        active[rows[~move]] = False
    return state, accepted


@torch.no_grad()
def taniguchi_chain(
    model: BoltzmannMachine,
    v: Tensor | None,
    num_chains: int,
    kernel: BlockGibbsKernel,
    generator: torch.Generator | None = None,
) -> tuple[State, ChainStats]:
    """One chain per row: noise, :func:`local_search`, :func:`random_order_gibbs_sweep`, :func:`coupling`.

    With ``v`` given the visible layer is clamped at it (the positive phase); else it moves too.
    Quantum layers keep their last Z outcome in the state, but the returned state is meant to be
    scored by ``F_Q`` (quantum layers traced out). Returns the state and the statistics of the
    chains' Gibbs sweep (``kernel``'s acceptance).
    """
    state = model.random_state(num_chains, generator)
    clamped: tuple[int, ...] = ()
    if v is not None:
        state[0] = v.to(state[0])
        clamped = (0,)
    state = local_search(model, state, clamped, generator)
    state, stats = random_order_gibbs_sweep(model, state, kernel, clamped, generator)
    state, _ = coupling(model, state, clamped, generator)
    return state, stats
