"""Likelihoods: exact by enumeration for small models; AIS and RAISE, which bracket it, otherwise.

Exact (float64 enumeration): ``log Z = logsumexp_{x_C} -F_C(x_C)`` over the classical
layers that are not summed out analytically (the quantum ones always are). Models whose
enumeration would exceed ``max_units`` binary units raise a clear error.

Both estimators run on one :class:`AnnealingPath` (docs/maths.md, 'AIS' and 'RAISE'):
intermediate distributions ``p_beta`` are models of the same family with every weight, hidden
bias, transverse field and coupling scaled by ``beta`` and the visible biases interpolated
from a base rate ``a_0`` to ``a`` (:class:`ScaledModel`); layers in ``summed`` (the quantum ones
included) are traced out exactly at every beta, so the chain runs on the other classical
layers only. The transition kernel is the exact (Metropolis-corrected) Gibbs step, which leaves
each ``p_beta`` invariant. At beta = 0 the model factorises and ``log Z_0`` is known in closed form.

* :func:`ais_log_partition` (Salakhutdinov and Murray 2008): forward from ``p_0``; ``log Z`` is a
  stochastic lower bound, so :func:`ais_log_likelihood` is optimistic (too high in expectation).
* :func:`raise_log_likelihood` (Burda, Grosse and Salakhutdinov 2015): backward from each test
  example; a stochastic lower bound on the annealing model's log-likelihood, conservative (too
  low in expectation on data from the model, and in practice on test data).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor

from qidbm.models.base import BoltzmannMachine, State
from qidbm.quantum import qubit_log_partition, softplus
from qidbm.samplers.chain import bernoulli
from qidbm.samplers.kernels import ExactStep

LOG_2PI = math.log(2 * math.pi)


class ScaledModel(BoltzmannMachine):
    """``p_beta``: a parameter-free view of ``model`` with couplings scaled by ``beta``.

    ``W_k -> beta W_k``, hidden biases ``c_l -> beta c_l``, transverse fields and their
    couplings ``-> beta``; binary visible biases ``a -> (1 - beta) a_0 + beta a``; Gaussian
    visibles keep their mean and variance (the base is the Gaussian ``N(mu, s^2)``).
    """

    def __init__(self, model: BoltzmannMachine, beta: float, base_visible_bias: Tensor | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_m", model)  # not a submodule: no parameters of its own
        self.layer_sizes = model.layer_sizes
        self.quantum_layers = model.quantum_layers
        self.gaussian_visible = model.gaussian_visible
        self.beta = float(beta)
        a = model.layer_bias(0)
        self._a0 = torch.zeros_like(a) if base_visible_bias is None else base_visible_bias.to(a)

    @property
    def log_variance(self) -> Tensor:  # type: ignore[override]
        return self._m.log_variance

    def layer_weight(self, k: int) -> Tensor:
        return self.beta * self._m.layer_weight(k)

    def layer_bias(self, l: int) -> Tensor:
        b = self._m.layer_bias(l)
        if l == 0:
            return b if self.gaussian_visible else (1 - self.beta) * self._a0 + self.beta * b
        return self.beta * b

    def transverse_parameter(self, l: int) -> Tensor:
        return self.beta * self._m.transverse_parameter(l)

    def transverse_coupling(self, l: int, neighbour: int) -> Tensor | None:
        U = self._m.transverse_coupling(l, neighbour)
        return None if U is None else self.beta * U

    def default_summed_layers(self) -> tuple[int, ...]:
        return self._m.default_summed_layers()


def _enumerated_layers(model: BoltzmannMachine, summed: Sequence[int]) -> list[int]:
    return [l for l in range(model.num_layers) if l not in set(summed)]


def _all_states(model: BoltzmannMachine, layers: Sequence[int], fixed: dict[int, Tensor] | None = None) -> State:
    n = sum(model.layer_sizes[l] for l in layers)
    p = model.layer_bias(0)
    cfg = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=p.dtype, device=p.device)
    out: State = [None] * model.num_layers  # type: ignore[list-item]
    s = 0
    for l in layers:
        out[l] = cfg[:, s : s + model.layer_sizes[l]]
        s += model.layer_sizes[l]
    return out


def _check_enumerable(model: BoltzmannMachine, layers: Sequence[int], max_units: int) -> None:
    n = sum(model.layer_sizes[l] for l in layers)
    if model.gaussian_visible:
        raise ValueError(
            f"exact likelihood of a {type(model).__name__} (Gaussian visibles) is not enumerable; "
            "use ais_log_partition"
        )
    if n > max_units:
        raise ValueError(
            f"exact enumeration needs 2^{n} configurations of layers {list(layers)}; the limit is "
            f"2^{max_units} (max_units). Use ais_log_partition / ais_log_likelihood for models this large."
        )


@torch.no_grad()
def exact_log_partition(model: BoltzmannMachine, max_units: int = 22) -> Tensor:
    """log Z by enumerating the classical layers that are not summed out analytically.

    For a model with one classical hidden layer and no quantum layer (RBM) the smaller side
    is enumerated; quantum layers are always traced out exactly.
    """
    if not model.gaussian_visible and not model.quantum_layers and model.num_layers == 2:
        # classical RBM: enumerate whichever side is smaller (sum the other analytically)
        if model.layer_sizes[1] < model.layer_sizes[0]:
            if model.layer_sizes[1] > max_units:
                _check_enumerable(model, [1], max_units)
            h = _all_states(model, [1])[1]
            f = -(h @ model.layer_bias(1)) - softplus(model.layer_bias(0) + h @ model.layer_weight(0).t()).sum(-1)
            return torch.logsumexp(-f.double(), 0)
    if model.gaussian_visible and model.num_layers == 2 and not model.quantum_layers:
        return _grbm_exact_log_partition(model, max_units)
    summed = model.default_summed_layers()
    layers = _enumerated_layers(model, summed)
    _check_enumerable(model, layers, max_units)
    states = _all_states(model, layers)
    return torch.logsumexp(-model.marginal_free_energy(states, summed).double(), 0)


def _grbm_exact_log_partition(model: BoltzmannMachine, max_units: int) -> Tensor:
    """GRBM: integrate the Gaussian visibles in closed form for each hidden configuration."""
    m = model.layer_sizes[1]
    if m > max_units:
        raise ValueError(f"exact GRBM log Z enumerates 2^{m} hidden states (limit 2^{max_units}); use AIS")
    h = _all_states(model, [1])[1]
    mu, W, b = model.layer_bias(0), model.layer_weight(0), model.layer_bias(1)
    var = torch.exp(model.log_variance)
    mean = mu + h @ W.t()
    logz_h = h @ b + (((mean**2) - mu**2) / (2 * var)).sum(-1) + 0.5 * (LOG_2PI + model.log_variance).sum()
    return torch.logsumexp(logz_h.double(), 0)


@torch.no_grad()
def exact_log_prob(model: BoltzmannMachine, v: Tensor, max_units: int = 22) -> Tensor:
    """log p(v) exactly, [B]: ``-F(v) - log Z`` (the other classical layers enumerated for DBMs)."""
    log_z = exact_log_partition(model, max_units)
    return _unnormalised_log_prob(model, v, max_units) - log_z


def _unnormalised_log_prob(model: BoltzmannMachine, v: Tensor, max_units: int) -> Tensor:
    summed = model.default_summed_layers()
    rest = [l for l in _enumerated_layers(model, summed) if l != 0]
    if not rest:
        return -model.marginal_free_energy([v] + [None] * (model.num_layers - 1), summed).double()
    _check_enumerable(model, rest, max_units)
    grid = _all_states(model, rest)
    out = []
    for row in v:
        states = [row.expand(grid[rest[0]].shape[0], -1) if l == 0 else grid[l] for l in range(model.num_layers)]
        out.append(torch.logsumexp(-model.marginal_free_energy(states, summed).double(), 0))
    return torch.stack(out)


@dataclass
class AISResult:
    """An AIS estimate: ``log_z`` with its standard error (delta method on the weights)."""

    log_z: float
    stderr: float
    num_runs: int
    num_betas: int
    log_weights: Tensor

    def __str__(self) -> str:
        return f"log Z = {self.log_z:.4f} +- {self.stderr:.4f} (AIS, {self.num_runs} runs x {self.num_betas} betas)"


def base_rate_visible_bias(data: Tensor, eps: float = 1e-3) -> Tensor:
    """Base-rate visible biases ``logit(mean of the data)`` (Salakhutdinov and Murray 2008)."""
    p = data.double().mean(0).clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


def annealing_schedule(num_betas: int) -> Tensor:
    """The default inverse temperatures ``0 = beta_0 < ... < beta_K = 1`` (K + 1 = ``num_betas``),
    float64: linear 0 -> 0.5 over 10% of the steps, 0.5 -> 0.9 over 40%, 0.9 -> 1 over 50% (the
    usual fine spacing near 1, Salakhutdinov and Murray 2008)."""
    if num_betas < 2:
        raise ValueError(f"an annealing path needs num_betas >= 2 (beta = 0 and beta = 1), got {num_betas}")
    n1, n2 = max(num_betas // 10, 1), max(4 * num_betas // 10, 1)
    return torch.cat([
        torch.linspace(0, 0.5, n1 + 1)[:-1], torch.linspace(0.5, 0.9, n2 + 1)[:-1],
        torch.linspace(0.9, 1.0, num_betas - n1 - n2),
    ]).double()


def _traced_log_partition(fields: dict[int, tuple[Tensor, Tensor | None]], scale: float) -> Tensor:
    """``sum_l log Tr exp(scale * (phi_l n + gamma_l X))`` over the summed layers (softplus for classical ones)."""
    out = 0.0
    for phi, g in fields.values():
        out = out + (softplus(scale * phi) if g is None else qubit_log_partition(scale * phi, scale * g)).sum(-1)
    return out


class AnnealingPath:
    """The annealing path of AIS and RAISE: intermediate models, base model and transition kernel.

    * **Path** (:class:`ScaledModel`): ``p_beta(x_C) = f_beta(x_C) / Z_beta`` with
      ``log f_beta = -F_C`` of ``model`` with every weight, hidden bias, transverse field and
      coupling scaled by ``beta`` and the binary visible biases ``(1 - beta) a_0 + beta a``.
      ``x_C`` are the layers not in ``summed = model.default_summed_layers()``; the summed ones
      (quantum layers always) are traced out in closed form at every beta. Because the summed
      layers' fields ``(phi_l, gamma_l)`` are linear in the scaled parameters,

          log f_beta(x) = -V_beta(v) - beta L(x) + sum_{l in summed} log Tr exp(beta (phi_l n + gamma_l X)),

      ``V_beta(v) = -v.((1 - beta) a_0 + beta a)`` (binary; ``sum (v - mu)^2 / 2 s^2`` for Gaussian
      visibles, the same at every beta) and ``L`` the rest of the classical energy, so one pass
      over a state gives ``log f`` at any number of betas (:meth:`log_f`).
    * **Base** ``p_0``: visibles ``Bernoulli(sigmoid(a_0))`` (``N(mu, s^2)``), every hidden unit
      uniform; ``log Z_0 = sum softplus(a_0) + (sum of hidden sizes) log 2`` (Gaussian:
      ``sum (log 2 pi + log s^2) / 2 + ...``), :meth:`log_z0`; exact draws, :meth:`base_sample`.
    * **Kernel** ``T_beta`` (:meth:`transition`): one sweep of :class:`~qidbm.samplers.kernels.ExactStep`
      on ``p_beta``: the odd layers drawn given the even ones, then the even ones given the odd
      ones (Metropolis-corrected next to a quantum layer). When the summed layers are all odd
      hidden layers (every RBM-family machine, DBMs and QiDBMs with odd quantum layers), the
      first half redraws every summed layer fresh, so ``T_beta`` as a kernel on ``x_C`` is a
      data-augmentation kernel, ``T(x'|x) = sum_s p_beta(s|x) K_beta(x'|s)``: it leaves
      ``p_beta`` invariant and is reversible, ``p_beta(x) T(x'|x) = p_beta(x') T(x|x')``, which
      RAISE needs (:attr:`reversible`).
    """

    def __init__(self, model: BoltzmannMachine, base_visible_bias: Tensor | None = None) -> None:
        self.model = model
        a = model.layer_bias(0)
        self.a0 = torch.zeros_like(a) if base_visible_bias is None else base_visible_bias.to(a)
        self.summed = tuple(model.default_summed_layers())
        self.kernel = ExactStep()

    @property
    def reversible(self) -> bool:
        """Whether :meth:`transition` is reversible on ``x_C`` (the summed layers are the odd hidden layers)."""
        return set(self.summed) == set(range(1, self.model.num_layers, 2))

    def at(self, beta: float) -> ScaledModel:
        """``p_beta`` as a model (parameter-free view)."""
        return ScaledModel(self.model, beta, self.a0)

    def log_z0(self) -> Tensor:
        """``log Z_0`` of the base model (float64 scalar)."""
        m = self.model
        hidden = sum(m.layer_sizes[1:]) * math.log(2.0)
        if m.gaussian_visible:
            return 0.5 * (LOG_2PI + m.log_variance).sum().double() + hidden
        return softplus(self.a0).sum().double() + hidden

    def base_sample(self, num: int, generator: torch.Generator | None = None) -> State:
        """``num`` exact draws from ``p_0``: visibles from the base rate (or ``N(mu, s^2)``), hidden layers uniform."""
        m = self.model
        a = m.layer_bias(0)
        st: State = []
        for l, n in enumerate(m.layer_sizes):
            if l == 0 and m.gaussian_visible:
                z = torch.randn(num, n, generator=generator, device=a.device, dtype=a.dtype)
                st.append(a + z * m.visible_std)
            elif l == 0:
                st.append(bernoulli(torch.sigmoid(self.a0).expand(num, -1).to(a.dtype), generator))
            else:
                st.append(bernoulli(torch.full((num, n), 0.5, device=a.device, dtype=a.dtype), generator))
        return st

    def log_f(self, state: State, betas: Sequence[float]) -> Tensor:
        """``log f_beta(x_C)`` for each beta in ``betas``: float64 ``[len(betas), B]`` from one pass over the state."""
        m = self.model
        f1, fields = m.marginal_free_energy_and_fields(state, self.summed)
        f1 = f1.double()
        fields = {l: (phi.double(), None if g is None else g.double()) for l, (phi, g) in fields.items()}
        v = state[0].double()
        if m.gaussian_visible:
            var = torch.exp(m.log_variance.double())
            vis1 = vis0 = ((v - m.layer_bias(0).double()) ** 2 / (2 * var)).sum(-1)
        else:
            vis1, vis0 = -(v @ m.layer_bias(0).double()), -(v @ self.a0.double())
        rest = f1 - vis1 + _traced_log_partition(fields, 1.0)  # L(x): the beta-linear classical part
        return torch.stack([
            -((1 - b) * vis0 + b * vis1 + b * rest) + _traced_log_partition(fields, b) for b in map(float, betas)
        ])

    def transition(self, beta: float, state: State, generator: torch.Generator | None = None) -> State:
        """One step of ``T_beta`` (see the class docstring); the input is not modified."""
        return self.kernel.run(self.at(beta), state, 1, generator=generator)[0]

    def anneal(
        self,
        state: State,
        betas: Tensor | Sequence[float],
        generator: torch.Generator | None = None,
        transition_first: bool = False,
        progress: str | None = None,
    ) -> tuple[Tensor, State]:
        """Run the chains along ``betas`` and return ``(sum_k [log f_{b_k} - log f_{b_{k-1}}], final state)``.

        ``transition_first=False`` (AIS, ``betas`` rising): for k = 1..K the weight
        ``log f_{b_k}(x) - log f_{b_{k-1}}(x)`` is added, then ``x <- T_{b_k}(x)`` (not after the last
        weight: it would change nothing). ``transition_first=True`` (RAISE, ``betas`` falling from 1):
        ``x <- T_{b_{k-1}}(x)`` first, then the weight. ``progress``: a progress bar with this label.
        """
        b = [float(x) for x in betas]
        log_w = torch.zeros(state[0].shape[0], dtype=torch.float64, device=state[0].device)
        steps: Iterable[int] = range(1, len(b))
        if progress:
            from tqdm.auto import tqdm

            from qidbm.progress import tqdm_kwargs

            steps = tqdm(steps, desc=progress, unit="beta", **tqdm_kwargs(mininterval=1.0))
        for k in steps:
            if transition_first:
                state = self.transition(b[k - 1], state, generator)
            lf = self.log_f(state, (b[k - 1], b[k]))
            log_w += lf[1] - lf[0]
            if not transition_first and k + 1 < len(b):
                state = self.transition(b[k], state, generator)
        return log_w, state


@torch.no_grad()
def ais_log_partition(
    model: BoltzmannMachine,
    num_runs: int = 100,
    num_betas: int = 10000,
    base_visible_bias: Tensor | None = None,
    generator: torch.Generator | None = None,
    betas: Tensor | None = None,
    progress: bool = False,
) -> AISResult:
    """AIS estimate of log Z (Neal 2001; Salakhutdinov and Murray 2008) on :class:`AnnealingPath`.

    Each of ``num_runs`` chains starts from an exact draw ``x_0 ~ p_0`` and moves along the path
    (``betas``, default :func:`annealing_schedule`), ``x_k = T_{beta_k}(x_{k-1})``, with weight

        log w = log Z_0 + sum_{k=1}^{K} [log f_{beta_k}(x_{k-1}) - log f_{beta_{k-1}}(x_{k-1})],

    and ``log Z ~ log mean_r w_r``. ``E[w] = Z`` exactly for any K (w is an importance weight of
    the chain's path), so by Jensen ``E[log mean w] <= log Z``: **log Z is a stochastic lower bound,
    and a log-likelihood ``log f(v) - log Z`` with it is optimistic** (too high in expectation;
    Burda, Grosse and Salakhutdinov 2015). The gap shrinks as K and the runs grow; a chain that
    misses modes at beta near 1 shows it as a low ``log Z`` with a small standard error.
    """
    if num_runs < 2 or num_betas < 2:
        raise ValueError("AIS needs num_runs >= 2 and num_betas >= 2")
    path = AnnealingPath(model, base_visible_bias)
    betas = annealing_schedule(num_betas) if betas is None else betas.double()
    st = path.base_sample(num_runs, generator)
    log_w, _ = path.anneal(st, betas, generator, transition_first=False, progress="AIS" if progress else None)
    log_w = log_w + path.log_z0()
    lw = log_w - log_w.max()
    w = torch.exp(lw)
    log_z = (torch.log(w.mean()) + log_w.max()).item()
    stderr = (w.std() / (math.sqrt(num_runs) * w.mean())).item()
    return AISResult(log_z=log_z, stderr=stderr, num_runs=num_runs, num_betas=len(betas), log_weights=log_w.cpu())


def _posterior_draw(model: BoltzmannMachine, v: Tensor, rest: Sequence[int], mf: State,
                    generator: torch.Generator | None) -> tuple[State, Tensor]:
    """One draw of the layers ``rest`` from the factorial posterior ``q(x | v) = prod Bernoulli(mf)``
    (the mean-field means, clamped to [1e-6, 1 - 1e-6]) and ``log q`` [B], float64."""
    st: State = [v] + [None] * (model.num_layers - 1)  # type: ignore[list-item]
    log_q = torch.zeros(v.shape[0], dtype=torch.float64, device=v.device)
    for l in rest:
        p = mf[l].clamp(1e-6, 1 - 1e-6)
        x = bernoulli(p, generator)
        st[l] = x
        log_q += (x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1).double()
    return st, log_q


def _hidden_rest(model: BoltzmannMachine) -> list[int]:
    """The classical hidden layers that are not summed out analytically (empty for RBM-family machines)."""
    return [l for l in _enumerated_layers(model, model.default_summed_layers()) if l != 0]


@torch.no_grad()
def ais_log_likelihood(
    model: BoltzmannMachine,
    data: Tensor,
    log_z: AISResult | float,
    num_posterior_samples: int = 100,
    generator: torch.Generator | None = None,
    batch_size: int = 1000,
) -> Tensor:
    """Per-example log-likelihood estimates ``log p(v) = log p~(v) - log Z``, [N] (float64).

    RBM, QRBM, GRBM, QGRBM: ``log p~(v) = -F(v)`` exactly. DBM / QiDBM: the classical hidden
    layers that are not summed out are integrated by importance sampling from the factorial
    mean-field posterior q, ``log p~(v) ~ logmeanexp_k [-F_C(v, x_k) - log q(x_k)]`` with K =
    ``num_posterior_samples`` draws; its expectation is a lower bound that tightens with K.
    With an AIS ``log Z`` (a stochastic lower bound) the RBM-family estimate is optimistic in
    expectation; for deep machines the two biases have opposite signs (with many posterior samples
    the ``log Z`` one dominates). :func:`raise_log_likelihood` is the conservative counterpart.
    """
    lz = log_z.log_z if isinstance(log_z, AISResult) else float(log_z)
    summed = model.default_summed_layers()
    rest = _hidden_rest(model)
    out = []
    for i in range(0, data.shape[0], batch_size):
        v = data[i : i + batch_size].to(model.layer_bias(0))
        if not rest:
            out.append(-model.marginal_free_energy([v] + [None] * (model.num_layers - 1), summed).double())
            continue
        mf = model.mean_field(v)
        acc = []
        for _ in range(num_posterior_samples):
            st, log_q = _posterior_draw(model, v, rest, mf, generator)
            acc.append(-model.marginal_free_energy(st, summed).double() - log_q)
        acc = torch.stack(acc)
        out.append(torch.logsumexp(acc, 0) - math.log(num_posterior_samples))
    return torch.cat(out) - lz


@torch.no_grad()
def raise_log_likelihood(
    model: BoltzmannMachine,
    data: Tensor,
    num_runs: int = 1,
    num_betas: int = 10000,
    base_visible_bias: Tensor | None = None,
    generator: torch.Generator | None = None,
    betas: Tensor | None = None,
    batch_size: int = 1000,
    progress: bool = False,
) -> Tensor:
    """RAISE, the reverse AIS estimator (Burda, Grosse and Salakhutdinov 2015): per-example
    conservative log-likelihood estimates, [N] (float64).

    The annealing model of :class:`AnnealingPath` is the generative model
    ``p_ann(x_0, ..., x_K) = p_0(x_0) prod_{k=1}^{K} T_k(x_k | x_{k-1})``, its marginal ``p_ann(x_K)``
    (K = ``num_betas`` - 1, the same path as :func:`ais_log_partition`). For each example ``v`` and
    each of ``num_runs`` reverse chains: ``x_K = (v, h)`` with the non-summed hidden layers ``h``
    drawn from the mean-field posterior ``q(h | v)`` (DBM, QiDBM; nothing to draw for RBM-family
    machines), then ``x_{k-1} ~ T_k(. | x_k)`` for k = K..1 (the reversal of ``T_k``, which is
    ``T_k`` itself: :attr:`AnnealingPath.reversible`), and

        log w = log f_1(x_K) - log q(h | v) - log Z_0 + sum_{k=0}^{K-1} [log f_{beta_k}(x_k) - log f_{beta_{k+1}}(x_k)].

    ``w`` is the importance weight of the reverse chain as a proposal for the annealing model's
    path given ``v``, so ``E[w] = p_ann(v)`` exactly, and the returned ``log mean_r w_r`` satisfies
    ``E[log mean w] <= log p_ann(v)``: **a stochastic lower bound on the annealing model's
    log-likelihood**. ``p_ann -> p`` as K grows. For finite K, averaged over data drawn from the
    model itself, ``E_v[log p_ann(v)] <= E_v[log p(v)]`` (Gibbs' inequality, KL(p || p_ann) >= 0),
    so the average estimate is below the true average log-likelihood; on test data it is
    conservative whenever the annealing model fits the data no better than the machine, which
    Burda et al. found throughout (the estimate errs low where AIS errs high). The two agree when
    both have converged: a gap between them bounds neither from the inside, but a small one says
    both are accurate.

    Cost: ``N * num_runs`` chains of K steps (AIS: ``num_runs`` chains in all), ``batch_size`` chains at
    a time. Needs a reversible
    kernel: the summed layers must be the odd hidden layers (a QiDBM with even quantum layers
    raises ``ValueError``).
    """
    if num_runs < 1:
        raise ValueError(f"RAISE needs num_runs >= 1 reverse chains per example, got {num_runs}")
    path = AnnealingPath(model, base_visible_bias)
    if not path.reversible:
        raise ValueError(
            f"RAISE needs a reversible transition: the layers summed out in closed form {list(path.summed)} "
            f"must be the odd hidden layers {list(range(1, model.num_layers, 2))} (quantum layers on odd "
            "positions only); use ais_log_partition for this machine"
        )
    betas = annealing_schedule(num_betas) if betas is None else betas.double()
    falling = betas.flip(0)
    if float(falling[0]) != 1.0 or float(falling[-1]) != 0.0:
        raise ValueError("RAISE's betas must run from 0 to 1 (the base model to the machine)")
    rest = _hidden_rest(model)
    log_z0 = path.log_z0()
    out = []
    step = max(1, batch_size // num_runs)  # examples per batch: batch_size chains at once
    for i in range(0, data.shape[0], step):
        v = data[i : i + step].to(model.layer_bias(0))
        b = v.shape[0]
        v = v.repeat_interleave(num_runs, 0)
        if rest:
            st, log_q = _posterior_draw(model, v, rest, model.mean_field(v), generator)
        else:
            st, log_q = [v] + [None] * (model.num_layers - 1), torch.zeros(v.shape[0], dtype=torch.float64, device=v.device)
        # the summed layers are redrawn by the first half-sweep of every transition; give them a value
        st = [x if x is not None else torch.zeros(v.shape[0], n, dtype=v.dtype, device=v.device)
              for x, n in zip(st, model.layer_sizes)]
        log_w = path.log_f(st, (1.0,))[0] - log_q - log_z0
        label = f"RAISE {i + b}/{data.shape[0]}" if progress else None
        dw, _ = path.anneal(st, falling, generator, transition_first=True, progress=label)
        log_w = (log_w + dw).view(b, num_runs)
        out.append(torch.logsumexp(log_w, 1) - math.log(num_runs))
    return torch.cat(out)
