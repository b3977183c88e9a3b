"""Block Gibbs transition kernels for layered (quantum) Boltzmann machines (docs/maths.md, 'Samplers').

One sweep updates the odd layers given the even ones, then the even layers given the odd ones,
every chain in parallel. Quantum layers are drawn in the Z basis with the closed-form
``P(n = 1)`` of :mod:`qidbm.quantum`. Two kernels, one interface::

    state, stats = kernel.run(model, state, num_steps, clamped=(), generator=None)
    state, stats = kernel.run_half_sweeps(model, state, parities, clamped=(), generator=None)

The input state is not modified; ``stats`` (:class:`~qidbm.samplers.chain.ChainStats`) covers the
chains of that call only.

* :class:`PaperStep` (the DO-EM paper's step): every layer is drawn from ``model.conditional``,
  the classical layers with the 0/1 outcome ``n`` in place of a quantum layer. For Gamma != 0
  this chain's stationary distribution is NOT p(x_C).
* :class:`ExactStep`: a Metropolis-corrected step on the extended target
  ``pi(x_C, n) = p(x_C) prod_j P(n_j | phi_j(x_C), Gamma_j(x_C))`` whose x_C-marginal is
  exactly p(x_C). n is drawn exactly given x_C; the classical layers next to a quantum
  layer are proposed from the same classical conditionals and accepted with
  ``log alpha = a(x') - a(x)``, ``a(x) = sum_q sum_j [log Tr e^{-H_qj} + log P(n_qj | x) - phi_qj(x) n_qj]``
  (:func:`qidbm.quantum.qubit_metropolis_weight`)
  (every other term of ``log pi - log q`` cancels). At Gamma = 0, ``a`` is constant
  and every proposal is accepted: classical block Gibbs.

A Gaussian visible layer moves by the kernel's ``visible`` object (:mod:`qidbm.samplers.visible`:
:class:`GaussianGibbs` or :class:`LangevinVisible`). :func:`make_kernel` builds a kernel from the
string options that configs and checkpoints' hyperparameters carry.
"""

from __future__ import annotations

from typing import Iterable, Literal, Sequence

import torch
from torch import Tensor

from qidbm.models.base import BoltzmannMachine, State
from qidbm.quantum import qubit_draw_prob, qubit_metropolis_weight
from qidbm.samplers.chain import ChainStats, bernoulli
from qidbm.samplers.visible import GaussianGibbs, LangevinVisible

QuantumStep = Literal["paper", "exact"]
VisibleStep = Literal["gibbs", "langevin"]


class BlockGibbsKernel:
    """Shared sweep loop of the kernels; subclasses implement :meth:`_half_sweep`."""

    def __init__(self, visible: GaussianGibbs | LangevinVisible | None = None) -> None:
        self.visible = visible if visible is not None else GaussianGibbs()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(visible={self.visible!r})"

    def check(self, model: BoltzmannMachine) -> None:
        """Raise ``ValueError`` when this kernel cannot run on ``model``."""

    @torch.no_grad()
    def run(
        self,
        model: BoltzmannMachine,
        state: State,
        num_steps: int,
        clamped: Iterable[int] = (),
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> tuple[State, ChainStats]:
        """``num_steps`` sweeps from ``state`` (not modified in place); layers in ``clamped`` stay fixed."""
        self.check(model)
        state = list(state)
        clamped = frozenset(clamped)
        stats = ChainStats()
        cache: dict[int, tuple[Tensor, Tensor]] = {}
        steps: Iterable[int] = range(num_steps)
        if progress:
            from tqdm.auto import tqdm

            from qidbm.progress import tqdm_kwargs

            steps = tqdm(steps, desc="Gibbs sweeps", leave=False, **tqdm_kwargs())
        for _ in steps:
            for parity in (1, 0):
                self._half_sweep(model, state, parity, clamped, generator, cache, stats)
        return state, stats

    @torch.no_grad()
    def run_half_sweeps(
        self,
        model: BoltzmannMachine,
        state: State,
        parities: Sequence[int],
        clamped: Iterable[int] = (),
        generator: torch.Generator | None = None,
    ) -> tuple[State, ChainStats]:
        """Update the odd (parity 1) or even (parity 0) layers in the given order.

        ``run(n)`` is ``run_half_sweeps([1, 0] * n)``. Any alternating order is a valid block
        Gibbs chain; PCD training uses ``[0] + [1, 0] * (k - 1)`` and draws the last odd half
        from the fields its free energy computes anyway (one product fewer per step).
        """
        self.check(model)
        state = list(state)
        clamped = frozenset(clamped)
        stats = ChainStats()
        cache: dict[int, tuple[Tensor, Tensor]] = {}
        for parity in parities:
            if parity not in (0, 1):
                raise ValueError(f"parities must be 0 (even layers) or 1 (odd layers), got {parity!r}")
            self._half_sweep(model, state, parity, clamped, generator, cache, stats)
        return state, stats

    def _half_sweep(self, model, state: State, parity: int, clamped, generator, cache, stats: ChainStats) -> None:
        raise NotImplementedError

    def _draw(self, model, l: int, p: Tensor, state: State, generator) -> Tensor:
        """Layer l's new value from its conditional ``p`` (``model.conditional(l, state)[0]``)."""
        if l == 0 and model.gaussian_visible:
            return self.visible.move(model, state[0], p, generator)
        return bernoulli(p, generator)


class PaperStep(BlockGibbsKernel):
    """The DO-EM paper's block Gibbs step: every layer from ``model.conditional`` (see the module docstring)."""

    def _half_sweep(self, model, state: State, parity: int, clamped, generator, cache, stats: ChainStats) -> None:
        # layers of one block are conditionally independent: draw them in index order
        for l in range(parity, model.num_layers, 2):
            if l not in clamped:
                state[l] = self._draw(model, l, model.conditional(l, state)[0], state, generator)


class ExactStep(BlockGibbsKernel):
    """The Metropolis-corrected step, exact for Gamma != 0 (see the module docstring).

    The Metropolis weight needs each quantum layer's pre-activation and field, which are cached
    per run and updated with every accepted proposal.
    """

    def check(self, model: BoltzmannMachine) -> None:
        if model.gaussian_visible and not getattr(self.visible, "exact_proposal", False):
            raise ValueError(
                "the exact quantum step proposes visibles from their Gaussian conditional; "
                "use visible_step='gibbs' with quantum_step='exact'"
            )

    def _half_sweep(self, model, state: State, parity: int, clamped, generator, cache, stats: ChainStats) -> None:
        Q = set(model.quantum_layers)
        block = [l for l in range(parity, model.num_layers, 2) if l not in clamped]
        if not block:
            return
        mh = [l for l in block if l not in Q and ((l - 1) in Q or (l + 1) in Q)]
        # layers of one block are conditionally independent: draw them in index order
        for l in block:
            if l in Q:
                # The cached field of q is always current: q's neighbours only move through the
                # Metropolis block, which updates the cache.
                if l not in cache:
                    cache[l] = (model.preactivation(l, state), model.field(l, state))
                phi, g = cache[l]
                state[l] = bernoulli(qubit_draw_prob(phi, g), generator)
            elif l not in mh:
                state[l] = self._draw(model, l, model.conditional(l, state)[0], state, generator)
        if mh:
            self._metropolis_block(model, state, mh, Q, generator, cache, stats)

    def _metropolis_block(self, model, state: State, mh: list[int], Q: set[int], generator, cache, stats) -> None:
        """Propose the layers ``mh`` from their classical conditionals given n; accept jointly per chain."""
        qs = sorted({q for l in mh for q in (l - 1, l + 1) if q in Q})
        for q in qs:
            if q not in cache:
                cache[q] = (model.preactivation(q, state), model.field(q, state))
        old = {l: state[l] for l in mh}
        new = {l: self._draw(model, l, model.conditional(l, state)[0], state, generator) for l in mh}
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
        stats.record(qs, accept)


Kernel = BlockGibbsKernel


def make_kernel(
    quantum_step: QuantumStep = "paper",
    visible_step: VisibleStep = "gibbs",
    langevin_steps: int = 10,
    langevin_step_size: float = 0.1,
    langevin_adjust: bool = True,
) -> BlockGibbsKernel:
    """The kernel that the string options of configs, checkpoints and the CLI name.

    ``quantum_step``: ``"paper"`` (:class:`PaperStep`) or ``"exact"`` (:class:`ExactStep`);
    ``visible_step``: ``"gibbs"`` (:class:`GaussianGibbs`) or ``"langevin"`` (:class:`LangevinVisible`
    with ``langevin_steps``, ``langevin_step_size``, ``langevin_adjust``).
    """
    if quantum_step not in ("paper", "exact"):
        raise ValueError(f"quantum_step must be 'paper' or 'exact', got {quantum_step!r}")
    if visible_step not in ("gibbs", "langevin"):
        raise ValueError(f"visible_step must be 'gibbs' or 'langevin', got {visible_step!r}")
    langevin = LangevinVisible(langevin_steps, langevin_step_size, langevin_adjust)  # validates them in any case
    visible = langevin if visible_step == "langevin" else GaussianGibbs()
    return (ExactStep if quantum_step == "exact" else PaperStep)(visible)
