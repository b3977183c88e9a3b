"""Chi-square tests of every sampler against the exact |Psi|^2 of a one-particle RBM state.

Independence: every chain contributes only its final state after a long burn-in, so the
binned counts are multinomial and Pearson's statistic is chi^2 distributed. Exact bin
probabilities come from numerical integration (scipy quad / dblquad) of exp(-k F(x)).
"""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from qidbm.nqs import (
    GibbsSampler,
    MetropolisHastingsSampler,
    MetropolisSampler,
    RBMWaveFunction,
    make_sampler,
    sample_chains,
)

D = torch.float64

N_CHAINS = 8000
BURN_IN = 150


def _wf(dim, form="sqrt"):
    """One particle; weights chosen so |Psi|^2 is skewed / bimodal, not a Gaussian."""
    wf = RBMWaveFunction(1, dim, 2, form=form, init_std=0.0)
    with torch.no_grad():
        if dim == 1:
            wf.rbm.weight.copy_(torch.tensor([[2.0, -1.5]], dtype=D))
            wf.rbm.visible_bias.copy_(torch.tensor([0.2], dtype=D))
            wf.rbm.log_variance.copy_(torch.log(torch.tensor([0.5], dtype=D)))
        else:
            wf.rbm.weight.copy_(torch.tensor([[1.5, -1.0], [0.5, 1.2]], dtype=D))
            wf.rbm.visible_bias.copy_(torch.tensor([0.2, -0.1], dtype=D))
            wf.rbm.log_variance.copy_(torch.log(torch.tensor([0.5, 0.7], dtype=D)))
        wf.rbm.hidden_bias.copy_(torch.tensor([0.5, -0.3], dtype=D))
    return wf


def _density(wf, power):
    """Unnormalised numpy density exp(-power * F(x)) for one point."""
    r = wf.rbm
    W = r.weight.detach().numpy()
    mu = r.visible_bias.detach().numpy()
    b = r.hidden_bias.detach().numpy()
    s2 = np.exp(r.log_variance.detach().numpy())

    def p(*x):
        x = np.array(x)
        F = np.sum((x - mu) ** 2 / (2 * s2)) - np.sum(np.logaddexp(0.0, b + (x / s2) @ W))
        return math.exp(-power * F)

    return p


def _probs_1d(wf, power, edges):
    p = _density(wf, power)
    Z = integrate.quad(p, -np.inf, np.inf, epsabs=0, epsrel=1e-11)[0]
    return np.array([integrate.quad(p, a, b, epsabs=0, epsrel=1e-10)[0] for a, b in zip(edges[:-1], edges[1:])]) / Z


def _probs_2d(wf, power, ex, ey):
    p = _density(wf, power)
    f = lambda y, x: p(x, y)  # noqa: E731 (dblquad integrates the first argument innermost)
    out = np.array(
        [
            [integrate.dblquad(f, ex[i], ex[i + 1], ey[j], ey[j + 1], epsabs=1e-10, epsrel=1e-8)[0] for j in range(len(ey) - 1)]
            for i in range(len(ex) - 1)
        ]
    )
    return out / out.sum()


def _final_states(sampler, wf, seed, burn_in=BURN_IN):
    g = torch.Generator().manual_seed(seed)
    sampler.generator = g
    x0 = 2.0 * torch.randn(N_CHAINS, wf.n_visible, generator=g, dtype=D)  # over-dispersed start
    _, x, acc = sample_chains(sampler, wf, x0, n_samples=1, thin=1, burn_in=burn_in)
    return x.numpy(), float(acc.mean())


def _pvalue(counts, probs, check=True):
    counts, probs = counts.ravel(), probs.ravel()
    if check:
        assert (probs * counts.sum()).min() > 5, "bins too small for the chi-square approximation"
    return stats.chisquare(counts, probs * counts.sum()).pvalue


SAMPLERS_1D = [
    ("metropolis", lambda: MetropolisSampler(step_size=2.0), "sqrt", BURN_IN),
    ("metropolis-amplitude", lambda: MetropolisSampler(step_size=2.0), "amplitude", BURN_IN),
    # small steps hop slowly between the two modes: a longer burn-in
    ("importance-small-dt", lambda: MetropolisHastingsSampler(time_step=0.2), "sqrt", 800),
    # a large time step: only the Green's-function ratio keeps this one exact
    ("importance-large-dt", lambda: MetropolisHastingsSampler(time_step=1.0), "sqrt", BURN_IN),
    ("gibbs", lambda: GibbsSampler(), "sqrt", BURN_IN),
]
# about equiprobable under |Psi|^2 (the left bin holds the small second mode)
EDGES_1D = np.array([-np.inf, -0.5, 0.8, 1.3, 1.6, 1.85, 2.05, 2.25, 2.45, 2.65, 2.9, 3.2, np.inf])
EDGES_1D_SQUARED = np.array([-np.inf, 1.3, 1.6, 1.8, 1.95, 2.1, 2.25, 2.4, 2.55, 2.75, 3.0, np.inf])  # for P^2


@pytest.mark.parametrize("name,make,form,burn_in", SAMPLERS_1D, ids=[s[0] for s in SAMPLERS_1D])
def test_sampler_chi_square_one_particle_1d(name, make, form, burn_in):
    wf = _wf(1, form)
    power = 1.0 if form == "sqrt" else 2.0  # |Psi|^2 = P or P^2
    edges = EDGES_1D if form == "sqrt" else EDGES_1D_SQUARED
    x, acc = _final_states(make(), wf, seed=11, burn_in=burn_in)
    counts = np.histogram(x[:, 0], bins=edges)[0]
    probs = _probs_1d(wf, power, edges)
    assert _pvalue(counts, probs) > 1e-3
    assert 0.2 < acc <= 1.0
    # power check: the same samples are firmly rejected against the wrong target
    wrong = _probs_1d(wf, 2.0 if form == "sqrt" else 1.0, edges)
    assert _pvalue(counts, wrong, check=False) < 1e-8


EX = np.array([-np.inf, 0.46, 1.09, 1.57, 2.07, np.inf])  # marginal quintiles of |Psi|^2
EY = np.array([-np.inf, -0.13, 0.43, 0.94, 1.55, np.inf])


@pytest.fixture(scope="module")
def probs_2d():
    return _probs_2d(_wf(2), 1.0, EX, EY)


@pytest.mark.parametrize("name", ["metropolis", "importance", "gibbs"])
def test_sampler_chi_square_one_particle_2d(name, probs_2d):
    wf = _wf(2)
    x, _ = _final_states(make_sampler(name, step_size=2.0, time_step=0.3), wf, seed=5)
    counts = np.histogram2d(x[:, 0], x[:, 1], bins=[EX, EY])[0]
    assert _pvalue(counts, probs_2d) > 1e-3


def test_gibbs_refuses_inexact_targets():
    with pytest.raises(ValueError, match="form='sqrt'"):
        GibbsSampler().check(RBMWaveFunction(2, 2, 2, form="amplitude"))
    with pytest.raises(ValueError, match="Jastrow"):
        GibbsSampler().check(RBMWaveFunction(2, 2, 2, jastrow=True))
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("hmc")


def test_metropolis_multi_particle_sweep_moves_every_particle():
    wf = RBMWaveFunction(3, 2, 4)
    x0 = torch.zeros(200, 6, dtype=D)
    x, acc = MetropolisSampler(1.0, torch.Generator().manual_seed(0)).sweep(wf, x0)
    moved = (x != x0).reshape(200, 3, 2).all(-1).double().mean(0)  # per-particle acceptance
    assert (moved > 0.5).all() and torch.allclose(acc.mean(), moved.mean())
