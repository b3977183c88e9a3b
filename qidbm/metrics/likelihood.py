"""Likelihoods: exact by enumeration for small models, annealed importance sampling otherwise.

Exact (float64 enumeration): ``log Z = logsumexp_{x_C} -F_C(x_C)`` over the classical
layers that are not summed out analytically (the quantum ones always are). Models whose
enumeration would exceed ``max_units`` binary units raise a clear error.

AIS (Salakhutdinov and Murray 2008; docs/maths.md, 'AIS'): intermediate distributions
``p_beta`` are models of the same family with every weight, hidden bias, transverse field
and coupling scaled by ``beta`` and the visible biases interpolated from a base rate
``a_0`` to ``a``; layers in ``summed`` (the quantum ones included) are traced out exactly
at every beta, so the chain runs on the other classical layers only. The transition kernel
is the exact (Metropolis-corrected) Gibbs step, which leaves each ``p_beta`` invariant.
At beta = 0 the model factorises and ``log Z_0`` is known in closed form.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from qidbm.models.base import BoltzmannMachine, State
from qidbm.quantum import softplus
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


def _log_z0(model: BoltzmannMachine, a0: Tensor, summed: Sequence[int]) -> Tensor:
    hidden = sum(model.layer_sizes[1:]) * math.log(2.0)
    if model.gaussian_visible:
        return 0.5 * (LOG_2PI + model.log_variance).sum().double() + hidden
    return softplus(a0).sum().double() + hidden


def base_rate_visible_bias(data: Tensor, eps: float = 1e-3) -> Tensor:
    """Base-rate visible biases ``logit(mean of the data)`` (Salakhutdinov and Murray 2008)."""
    p = data.double().mean(0).clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


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
    """AIS estimate of log Z (see the module docstring). ``betas`` default: 0 -> 0.5 linear over
    10% of the steps, 0.5 -> 0.9 over 40%, 0.9 -> 1 over 50% (the usual fine spacing near 1)."""
    if num_runs < 2 or num_betas < 2:
        raise ValueError("AIS needs num_runs >= 2 and num_betas >= 2")
    dev, dt = model.layer_bias(0).device, model.layer_bias(0).dtype
    a = model.layer_bias(0)
    a0 = torch.zeros_like(a) if base_visible_bias is None else base_visible_bias.to(a)
    if betas is None:
        n1, n2 = max(num_betas // 10, 1), max(4 * num_betas // 10, 1)
        betas = torch.cat([
            torch.linspace(0, 0.5, n1 + 1)[:-1], torch.linspace(0.5, 0.9, n2 + 1)[:-1],
            torch.linspace(0.9, 1.0, num_betas - n1 - n2),
        ]).double()
    betas = betas.double()
    summed = model.default_summed_layers()
    kernel = ExactStep()

    # exact draw from p_0: visibles from the base rate (or N(mu, s^2)), hidden layers uniform
    def f_beta(beta: float, st: State) -> Tensor:
        return ScaledModel(model, beta, a0).marginal_free_energy(st, summed).double()

    p0 = ScaledModel(model, 0.0, a0)
    st: State = []
    for l, n in enumerate(model.layer_sizes):
        if l == 0:
            if model.gaussian_visible:
                z = torch.randn(num_runs, n, generator=generator, device=dev, dtype=dt)
                st.append(model.layer_bias(0) + z * model.visible_std)
            else:
                st.append(bernoulli(torch.sigmoid(a0).expand(num_runs, -1).to(dt), generator))
        else:
            st.append(bernoulli(torch.full((num_runs, n), 0.5, device=dev, dtype=dt), generator))
    del p0
    log_w = torch.zeros(num_runs, dtype=torch.float64, device=dev)
    steps = range(1, len(betas))
    if progress:
        from tqdm.auto import tqdm

        from qidbm.progress import tqdm_kwargs

        steps = tqdm(steps, desc="AIS", unit="beta", **tqdm_kwargs(mininterval=1.0))
    for k in steps:
        b_prev, b = float(betas[k - 1]), float(betas[k])
        log_w += f_beta(b_prev, st) - f_beta(b, st)
        st, _ = kernel.run(ScaledModel(model, b, a0), st, 1, generator=generator)
    log_z0 = _log_z0(model, a0, summed)
    lw = log_w - log_w.max()
    w = torch.exp(lw)
    log_z = (torch.log(w.mean()) + log_w.max() + log_z0).item()
    stderr = (w.std() / (math.sqrt(num_runs) * w.mean())).item()
    return AISResult(log_z=log_z, stderr=stderr, num_runs=num_runs, num_betas=len(betas), log_weights=log_w.cpu())


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
    """
    lz = log_z.log_z if isinstance(log_z, AISResult) else float(log_z)
    summed = model.default_summed_layers()
    rest = [l for l in _enumerated_layers(model, summed) if l != 0]
    out = []
    for i in range(0, data.shape[0], batch_size):
        v = data[i : i + batch_size].to(model.layer_bias(0))
        if not rest:
            out.append(-model.marginal_free_energy([v] + [None] * (model.num_layers - 1), summed).double())
            continue
        mf = model.mean_field(v)
        acc = []
        for _ in range(num_posterior_samples):
            st = [v] + [None] * (model.num_layers - 1)
            log_q = torch.zeros(v.shape[0], dtype=torch.float64, device=v.device)
            for l in rest:
                p = mf[l].clamp(1e-6, 1 - 1e-6)
                x = bernoulli(p, generator)
                st[l] = x
                log_q += (x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1).double()
            acc.append(-model.marginal_free_energy(st, summed).double() - log_q)
        acc = torch.stack(acc)
        out.append(torch.logsumexp(acc, 0) - math.log(num_posterior_samples))
    return torch.cat(out) - lz
