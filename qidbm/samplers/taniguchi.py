"""The chains of Taniguchi et al. (2023), "End-to-end training of deep Boltzmann machines by
unbiased contrastive divergence with local mode initialization" (reference code: github
iShohei220/unbiased_dbm, ``model.py``), for any layered machine of this package.

A chain of their estimator, with v clamped in the positive phase:

1. every unclamped layer starts from uniform noise;
2. :func:`local_search`: zero-temperature block updates ``x_l <- 1[P(x_l = 1 | neighbours) > 1/2]``
   (a quantum layer through its closed form ``P(n = 1)``; a Gaussian visible layer to its
   conditional mean), the even or the odd block first as drawn once per chain, repeated until a
   sweep changes nothing: a local mode. Each chain leaves the batch at that sweep, as in their code,
   so the products shrink as chains converge (half the row-sweeps of sweeping every chain until the
   slowest has converged, for the paper's 784-498-498 DBM);
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
from qidbm.precision import layer_product
from qidbm.quantum import qubit_draw_prob
from qidbm.samplers.chain import ChainStats, bernoulli
from qidbm.samplers.kernels import BlockGibbsKernel


def random_orders(num_chains: int, generator: torch.Generator | None, device) -> Tensor:
    """One fair coin per chain: True = the even block (layers 0, 2, ...) first."""
    return torch.rand(num_chains, generator=generator, device=device) < 0.5


def _parity_order(even_first: bool) -> tuple[int, int]:
    return (0, 1) if even_first else (1, 0)


def _select_rows(state: State, rows: Tensor) -> State:
    return [x[rows] for x in state]


def _scatter_rows(state: State, rows: Tensor, part: State) -> None:
    for x, y in zip(state, part):
        x[rows] = y


# A chain that has converged leaves the local search's batch, so each sweep's products run on the
# chains still moving only. For the result to stay bit for bit that of the whole batch, a row's
# product must not depend on how many rows share the batch. Measured with MKL's float32 GEMM (AMD
# EPYC, 1 to 16 threads): it does not for batches that are a multiple of 4 rows, nor for larger
# batches, but it can differ in the last bit for 1-3 rows (and 5-7, 9-11, ... rows with several
# threads), where the rows outside the kernel's 4-row tiles take another path. So the batch is
# padded to a multiple of 8 rows with converged chains (their results are dropped), and a group of
# at most that many rows keeps its whole batch (the same matrix as before). bfloat16 and float64
# products showed no dependence on the batch at all.
_ROW_MULTIPLE = 8


def _clamped_products(model: BoltzmannMachine, state: State, clamped: frozenset[int]) -> dict[tuple, Tensor]:
    """The products that every unclamped layer receives from a clamped neighbour, which stay the same
    through the whole search (the positive phase's ``v W_0``: 44% of a 784-498-498 DBM's work per
    sweep), keyed as :func:`_mode_update` reads them. Computed once on the batch the search started
    with, the same products the search used to recompute every sweep."""
    out: dict[tuple, Tensor] = {}
    for c in clamped:
        for l in (c - 1, c + 1):
            if not 0 <= l < model.num_layers or l in clamped:
                continue
            out[("below" if c == l - 1 else "above", l)] = (
                model.input_from_below(l, state) if c == l - 1 else model.input_from_above(l, state)
            )
            if l in model.quantum_layers:
                U = model.transverse_coupling(l, c)
                if U is not None:
                    out[("field", l, c)] = layer_product(model._send(c, state[c]), U)
    return out


def _mode_update(model: BoltzmannMachine, l: int, state: State, fixed: dict[tuple, Tensor]) -> Tensor:
    """Layer l's zero-temperature update: ``model.conditional(l, state)`` thresholded at 1/2 (the
    conditional mean for a Gaussian visible layer), with the same operations in the same order, but
    the products from clamped neighbours read from ``fixed`` (:func:`_clamped_products`)."""
    phi = model.layer_bias(l)
    if l > 0:
        x = fixed.get(("below", l))
        phi = phi + (model.input_from_below(l, state) if x is None else x)
    if l + 1 < model.num_layers:
        x = fixed.get(("above", l))
        phi = phi + (model.input_from_above(l, state) if x is None else x)
    if l == 0 and model.gaussian_visible:
        return phi
    if l in model.quantum_layers:
        g = model.transverse_parameter(l)
        for nb in (l - 1, l + 1):
            if 0 <= nb < model.num_layers:
                U = model.transverse_coupling(l, nb)
                if U is not None:
                    x = fixed.get(("field", l, nb))
                    g = g + (layer_product(model._send(nb, state[nb]), U) if x is None else x)
        p = qubit_draw_prob(phi, g)
    else:
        p = torch.sigmoid(phi)
    return (p > 0.5).to(p.dtype)


def _batch_rows(num_active: int, num_rows: int) -> int:
    """How many rows a sweep with ``num_active`` moving chains computes: the next multiple of
    :data:`_ROW_MULTIPLE`, or the whole group of ``num_rows`` when that is not more."""
    target = -(-num_active // _ROW_MULTIPLE) * _ROW_MULTIPLE
    return num_rows if target >= num_rows else target


def _rows_changed(new: Tensor, old: Tensor, binary: bool) -> Tensor:
    """Which rows differ. For 0/1 layers the sum of ``|new - old|`` (exact, a third of the time of
    ``(new != old).any(1)`` on this CPU); the conditional means of a Gaussian layer are compared as such."""
    if binary:
        return (new - old).abs_().sum(1) != 0
    return (new != old).any(1)


@torch.no_grad()
def _search_group(
    model: BoltzmannMachine, part: State, order: tuple[int, int], clamped: frozenset[int], max_sweeps: int
) -> Tensor:
    """Local search of the chains ``part`` (modified in place), all in one block order; each chain
    leaves the batch after its first sweep that changes nothing. Returns the sweeps per chain."""
    n, dev = part[0].shape[0], part[0].device
    free = [l for l in range(model.num_layers) if l not in clamped]
    if not free:  # nothing moves: one sweep finds the mode
        return torch.ones(n, dtype=torch.long, device=dev)
    binary = {l: not (l == 0 and model.gaussian_visible) for l in free}
    sweeps = torch.full((n,), max_sweeps, dtype=torch.long, device=dev)
    # the batch: its chains' indices in `part` (ascending), their states and clamped products, and
    # which of them still move (the others only pad the batch; their results are not used). The
    # clamped layers are read only through their products, so the batch does not carry them.
    rows = torch.arange(n, device=dev)
    fixed = _clamped_products(model, part, clamped)
    cur = [None if l in clamped else x for l, x in enumerate(part)]
    active = torch.ones(n, dtype=torch.bool, device=dev)
    for sweep in range(1, max_sweeps + 1):
        before = list(cur)  # _mode_update returns new tensors: `before` keeps the sweep's start
        for parity in order:
            for l in range(parity, model.num_layers, 2):
                if l not in clamped:
                    cur[l] = _mode_update(model, l, cur, fixed)
        changed = _rows_changed(cur[free[0]], before[free[0]], binary[free[0]])
        for l in free[1:]:
            changed |= _rows_changed(cur[l], before[l], binary[l])
        # a sweep that changed nothing leaves the chain at a fixed point of the (deterministic)
        # sweep: every further sweep would return it unchanged, so it stops with this state
        stop = active & ~changed
        if bool(stop.any()):
            idx = stop.nonzero().flatten()
            done = rows[idx]
            sweeps[done] = sweep
            for l in free:
                part[l][done] = cur[l][idx]
        active &= changed
        num_active = int(active.sum())
        if num_active == 0:
            return sweeps
        size = _batch_rows(num_active, n)
        if size < active.numel():
            keep = active.clone()
            keep[(~active).nonzero().flatten()[: size - num_active]] = True
            idx = keep.nonzero().flatten()
            rows, active = rows[idx], active[idx]
            cur = [None if x is None else x[idx] for x in cur]
            fixed = {k: x[idx] for k, x in fixed.items()}
    idx = active.nonzero().flatten()
    for l in free:  # max_sweeps reached: the chains still moving keep their last state
        part[l][rows[idx]] = cur[l][idx]
    return sweeps


@torch.no_grad()
def local_search(
    model: BoltzmannMachine,
    state: State,
    clamped: Iterable[int] = (),
    generator: torch.Generator | None = None,
    even_first: Tensor | None = None,
    max_sweeps: int = 1000,
    sweeps: Tensor | None = None,
) -> State:
    """Zero-temperature block coordinate descent of the energy from ``state`` until no unit changes
    (a local mode), the block order fixed per chain (``even_first``, drawn if None). Each sweep can
    only lower the energy, so the search ends; ``max_sweeps`` guards against ties that cycle.

    Each chain stops after its first sweep that changes nothing (as in Taniguchi et al.'s code), so
    the products shrink as chains converge; a sweep is a deterministic map, so the modes are those
    of sweeping the whole batch until the last chain has converged, bit for bit where a row's
    products do not depend on the batch's other rows (:data:`_ROW_MULTIPLE`). ``sweeps``: a ``[B]``
    integer tensor that receives each chain's number of sweeps (the last one changed nothing), if given.
    """
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
        done = _search_group(model, part, _parity_order(flag), clamped, max_sweeps)
        _scatter_rows(state, rows, part)
        if sweeps is not None:
            sweeps[rows] = done.to(sweeps.dtype)
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
