"""Negative-phase estimators: where the states of the loss's negative term come from.

Each owns its chains and says how a machine trained with it is sampled:

* :class:`FromData` (CD-k): chains start at the batch, ``sweeps`` sweeps;
* :class:`FromNoise`: fresh noise every step, ``sweeps`` sweeps (optionally annealed): the machine
  learns to turn noise into data in that many sweeps, and is sampled the same way;
* :class:`Persistent` (PCD, Tieleman 2008): chains kept across steps;
* :class:`TemperedPersistent`: persistent chains advanced by replica exchange over inverse
  temperatures or transverse-field scales (:mod:`qidbm.samplers.tempering`);
* :class:`Mixture`: the rows of a fresh estimator and a persistent one in one negative term;
* :class:`TaniguchiChains`: Taniguchi et al.'s unbiased chains (noise, local search, one sweep,
  coupling; :mod:`qidbm.samplers.taniguchi`), scored on full states.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor

from qidbm.estimators.base import NegativePhase
from qidbm.models.base import BoltzmannMachine, State
from qidbm.samplers.chain import ChainStats, bernoulli
from qidbm.samplers.kernels import BlockGibbsKernel, PaperStep

__all__ = ["FromData", "FromNoise", "Mixture", "Persistent", "TaniguchiChains", "TemperedPersistent"]


def _check_sweeps(name: str, sweeps) -> None:
    if isinstance(sweeps, bool) or not isinstance(sweeps, int) or sweeps < 1:
        raise ValueError(f"{name}: sweeps must be an integer >= 1 (Gibbs sweeps per training step, e.g. 1 or 20), "
                         f"got {sweeps!r}")


def _check_num_chains(name: str, num_chains) -> None:
    if num_chains is not None and (isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1):
        raise ValueError(f"{name}: num_chains must be a positive integer (e.g. 500), or null for one chain per "
                         f"batch row; got {num_chains!r}")


def _on(state: State, like: Tensor) -> State:
    """``state`` on ``like``'s device and dtype (chains restored from a checkpoint live on the CPU)."""
    return [x.to(device=like.device, dtype=like.dtype) for x in state]


class FromData(NegativePhase):
    """CD-k (Hinton 2002): chains start at the batch (the even hidden layers seeded by a short mean
    field; the first half-sweep redraws the odd ones) and run ``sweeps`` block Gibbs sweeps."""

    def __init__(self, sweeps: int = 1) -> None:
        _check_sweeps("FromData", sweeps)
        self.sweeps = sweeps

    @torch.no_grad()
    def sample(self, model, v, kernel, generator):
        mf = model.mean_field(v, num_iters=1 if model.num_layers == 2 else 2)
        state = [v] + [bernoulli(p, generator) for p in mf[1:]]
        return kernel.run(model, state, self.sweeps, generator=generator)


class FromNoise(NegativePhase):
    """Fresh chains from noise every step, as many as the batch, ``sweeps`` sweeps (Liao et al. 2022).

    ``density=[lo, hi]``: binary visible units start ``Bernoulli(q)``, ``q ~ U(lo, hi)`` per chain
    (:meth:`BoltzmannMachine.random_state`). ``anneal_from=beta_1 < 1``: the sweeps are simulated
    annealing, their inverse temperatures rising geometrically from ``beta_1`` to 1
    (:func:`qidbm.samplers.tempering.annealing_betas`). The machine learns to turn this noise into
    data in ``sweeps`` sweeps, so it is sampled the same way (:meth:`sampling`).
    """

    def __init__(self, sweeps: int = 1, density: list[float] | None = None, anneal_from: float = 1.0) -> None:
        _check_sweeps("FromNoise", sweeps)
        if density is not None:
            from qidbm.models.base import check_density_range

            density = list(check_density_range(density))
        if anneal_from != 1.0:
            from qidbm.samplers.tempering import annealing_betas

            annealing_betas(anneal_from, sweeps)  # validates it
        self.sweeps, self.density, self.anneal_from = sweeps, density, float(anneal_from)

    def check(self, model, kernel) -> None:
        if self.density is not None and model.gaussian_visible:
            raise ValueError("FromNoise(density=...) sets the start of binary visible units; a GRBM/QGRBM starts "
                             "from Gaussian noise: leave density unset")

    def start(self, model: BoltzmannMachine, n: int, generator) -> State:
        self.check(model, None)
        return model.random_state(n, generator, visible_density=None if self.density is None else tuple(self.density))

    @torch.no_grad()
    def sample(self, model, v, kernel, generator):
        state = self.start(model, v.shape[0], generator)
        if self.anneal_from != 1.0:
            from qidbm.samplers.tempering import annealed_run, annealing_betas

            return annealed_run(model, kernel, state, annealing_betas(self.anneal_from, self.sweeps), generator)
        return kernel.run(model, state, self.sweeps, generator=generator)

    def sampling(self, gaussian_visible: bool):
        from qidbm.samplers.drawing import SamplingSpec

        # binary units: the machine's own binary images; Gaussian ones: the conditional mean (the per-pixel
        # noise is not part of the image; Liao et al. 2022 do the same)
        return SamplingSpec(num_steps=self.sweeps, start="noise", output="mean" if gaussian_visible else "sample",
                            noise_density=None if self.density is None else tuple(self.density),
                            anneal_from=self.anneal_from)


class Persistent(NegativePhase):
    """PCD (Tieleman 2008): ``num_chains`` chains (default: the batch size) kept across steps, each
    step ``sweeps`` sweeps; saved in checkpoints (one set per DDP rank).

    ``update="fused"`` updates the even layers first and draws the last odd half-sweep from the fields
    that the loss's free energy of the negative rows computes anyway (scikit-learn's BernoulliRBM
    order: one product fewer per step). It needs the loss to sum out exactly the odd layers and the
    paper's quantum step; the odd layers then lag the parameters by one update, which changes the
    dynamics at large learning rates, so it is opt-in.
    """

    def __init__(self, num_chains: int | None = None, sweeps: int = 1,
                 update: Literal["sweep", "fused"] = "sweep") -> None:
        _check_num_chains("Persistent", num_chains)
        _check_sweeps("Persistent", sweeps)
        if update not in ("sweep", "fused"):
            raise ValueError(f"Persistent: update must be 'sweep' or 'fused', got {update!r}")
        self.num_chains, self.sweeps, self.update = num_chains, sweeps, update
        self._chains: State | None = None

    @property
    def chains(self) -> State | None:
        return self._chains

    @chains.setter
    def chains(self, state: State | None) -> None:
        self._chains = None if state is None else list(state)

    def current(self, model: BoltzmannMachine, v: Tensor, generator) -> State:
        """The chains to advance: the kept ones, or fresh noise when there are none of the right number."""
        n = self.num_chains or v.shape[0]
        if self._chains is None or self._chains[0].shape[0] != n:
            self._chains = model.random_state(n, generator)
        return _on(self._chains, v)

    def check(self, model, kernel) -> None:
        if self.update != "fused":
            return
        if model.quantum_layers and not isinstance(kernel, PaperStep):
            raise ValueError("Persistent(update='fused') draws quantum layers from the loss's fields, which is the "
                             "paper's step: use the PaperStep kernel, or update='sweep'")
        if set(self.summed_layers(model)) != set(range(1, model.num_layers, 2)):
            raise ValueError("Persistent(update='fused') needs the loss to sum out exactly the odd layers "
                             f"({type(model).__name__} sums {self.summed_layers(model)}): use update='sweep'")

    @torch.no_grad()
    def sample(self, model, v, kernel, generator):
        state = self.current(model, v, generator)
        if self.update == "fused":
            self.check(model, kernel)
            # the odd layers of the returned state are the previous ones (the loss sums them out);
            # after_loss draws their new values
            return kernel.run_half_sweeps(model, state, [0] + [1, 0] * (self.sweeps - 1), generator=generator)
        state, stats = kernel.run(model, state, self.sweeps, generator=generator)
        self._chains = state
        return state, stats

    @torch.no_grad()
    def after_loss(self, model, state, fields, num_positive, generator) -> None:
        if self.update != "fused":
            return
        from qidbm.quantum import qubit_draw_prob

        state = list(state)
        for l, (phi, gam) in fields.items():
            # gamma is a [n_l] parameter unless coupled fields make it per row
            if gam is None:
                p = torch.sigmoid(phi[num_positive:])
            else:
                phi, gam = torch.broadcast_tensors(phi, gam)
                p = qubit_draw_prob(phi[num_positive:], gam[num_positive:])
            state[l] = bernoulli(p, generator)
        self._chains = state


class TemperedPersistent(NegativePhase):
    """Persistent chains advanced by replica exchange (:class:`qidbm.samplers.tempering.ReplicaExchange`):
    ``num_chains`` chains per replica, each step ``sweeps`` rounds of one sweep per replica and swaps
    between neighbours, accepted by the exact ratio of the replicas' probabilities (quantum layers
    traced out in closed form). The replicas differ in inverse temperature, ``betas = [1, b_1, ...]``
    (decreasing), or in the scale of the transverse fields, ``field_scales = [1, s_1, ..., 0]``
    (quantum tempering: the last replica is the classical twin); give one ladder. Only the first
    replica's chains enter the loss, and only they are saved in checkpoints (a resume restarts the
    others from noise)."""

    def __init__(self, betas: Sequence[float] | None = None, num_chains: int | None = None, sweeps: int = 1,
                 field_scales: Sequence[float] | None = None) -> None:
        from qidbm.samplers.tempering import check_ladder

        if (betas is None) == (field_scales is None):
            raise ValueError("TemperedPersistent: give one ladder, betas (temperatures) or field_scales (transverse "
                             "fields), e.g. betas=[1.0, 0.9, 0.8]")
        self.betas = None if betas is None else [float(b) for b in check_ladder(list(betas), "betas", allow_zero=False)]
        self.field_scales = None if field_scales is None else \
            [float(b) for b in check_ladder(list(field_scales), "field_scales", allow_zero=True)]
        _check_num_chains("TemperedPersistent", num_chains)
        _check_sweeps("TemperedPersistent", sweeps)
        self.num_chains, self.sweeps = num_chains, sweeps
        self._persistent = Persistent(num_chains, sweeps)
        self._hot: list[State] | None = None
        self._exchange = None

    def check(self, model, kernel) -> None:
        if self.field_scales is not None and not model.quantum_layers:
            raise ValueError(f"TemperedPersistent(field_scales=...) scales transverse fields; {type(model).__name__} "
                             "has none: use betas")

    @property
    def chains(self) -> State | None:
        return self._persistent.chains

    @chains.setter
    def chains(self, state: State | None) -> None:
        self._persistent.chains = state

    @torch.no_grad()
    def sample(self, model, v, kernel, generator):
        from qidbm.samplers.tempering import ReplicaExchange

        cold = self._persistent.current(model, v, generator)
        if self._exchange is None:
            self._exchange = ReplicaExchange.temperatures(model, self.betas, kernel) if self.betas is not None \
                else ReplicaExchange.field_scales(model, self.field_scales, kernel)
        else:
            self._exchange.refresh(model)  # the ladder follows the parameters of this step
        ladder, n = self._exchange.ladder, cold[0].shape[0]
        if self._hot is None or len(self._hot) != len(ladder) - 1 or self._hot[0][0].shape[0] != n:
            self._hot = [t.random_state(n, generator) for t in ladder[1:]]
        states, stats = self._exchange.run([cold, *self._hot], self.sweeps, generator=generator)
        self._persistent.chains, self._hot = states[0], states[1:]
        return states[0], stats


class Mixture(NegativePhase):
    """The rows of ``fresh`` (e.g. :class:`FromNoise`, one chain per batch row) and of ``persistent``
    (e.g. :class:`Persistent` or :class:`TemperedPersistent`) in one negative term:
    ``F_neg = (1 - w) mean_fresh F + w mean_persistent F``. ``weight=None`` weighs every row alike
    (``w = n_persistent / (n_fresh + n_persistent)``). The gradient then matches the data to that
    mixture of the fresh sampler and the model's equilibrium. Samples are drawn as ``fresh``'s are.
    """

    def __init__(self, fresh: NegativePhase, persistent: NegativePhase, weight: float | None = None) -> None:
        if isinstance(fresh, (Persistent, TemperedPersistent, Mixture)):
            raise TypeError("Mixture: the first estimator gives fresh rows each step (FromNoise or FromData)")
        if not isinstance(persistent, (Persistent, TemperedPersistent)):
            raise TypeError("Mixture: the second estimator keeps chains (Persistent or TemperedPersistent)")
        if isinstance(persistent, Persistent) and persistent.update == "fused":
            raise ValueError("Mixture: Persistent(update='fused') draws its chains from the loss's own fields, "
                             "which a mixture shares with other rows; use update='sweep'")
        if weight is not None and not 0 < weight < 1:
            raise ValueError(f"Mixture: weight must be in (0, 1), or null to weigh every row alike; got {weight}")
        self.fresh, self.persistent, self.weight = fresh, persistent, weight
        self._num_fresh = 0

    def check(self, model, kernel) -> None:
        self.fresh.check(model, kernel)
        self.persistent.check(model, kernel)

    @property
    def chains(self) -> State | None:
        return self.persistent.chains

    @chains.setter
    def chains(self, state: State | None) -> None:
        self.persistent.chains = state

    @torch.no_grad()
    def sample(self, model, v, kernel, generator):
        a, sa = self.fresh.sample(model, v, kernel, generator)
        b, sb = self.persistent.sample(model, v, kernel, generator)
        self._num_fresh = a[0].shape[0]
        return [torch.cat([x, y.to(x.dtype)]) for x, y in zip(a, b)], sa.merge(sb)

    def free_energy(self, f: Tensor, batch_size: int) -> Tensor:
        if self.weight is None:
            return f.mean()
        n = self._num_fresh
        return (1 - self.weight) * f[:n].mean() + self.weight * f[n:].mean()

    def sampling(self, gaussian_visible: bool):
        return self.fresh.sampling(gaussian_visible)


class TaniguchiChains(NegativePhase):
    """Taniguchi et al. (2023)'s unbiased negative chains, as many as the batch: uniform noise, a local
    mode by zero-temperature block updates, one Gibbs sweep in a random block order, then their
    Metropolis coupling steps (:func:`qidbm.samplers.taniguchi.taniguchi_chain`). The loss scores
    full states (only quantum layers, which have no classical value, are traced out), as their
    estimator does; use it with :class:`~qidbm.estimators.ClampedLocalMode` as the positive phase.
    Samples are drawn their way: noise, local search, the visible part of the mode."""

    def __init__(self) -> None:
        pass

    def summed_layers(self, model: BoltzmannMachine) -> tuple[int, ...]:
        return tuple(model.quantum_layers)

    @torch.no_grad()
    def sample(self, model, v, kernel, generator):
        from qidbm.samplers.taniguchi import taniguchi_chain

        return taniguchi_chain(model, None, v.shape[0], kernel, generator)

    def sampling(self, gaussian_visible: bool):
        from qidbm.samplers.drawing import SamplingSpec

        return SamplingSpec(num_steps=0, start="noise", output="local_search")
