"""Gamma stays valid after any optimizer step: the models store Gamma = |transverse_field|
(plus |gamma + U v| with coupled fields), so every real parameter value is a valid Gamma >= 0.

Fault injected: an optimizer step with an absurd learning rate (1e6, both signs of the
gradient) and parameters set by hand to +-1e4, +-1e18 (and +-1e30, an expected failure until
qidbm.quantum avoids forming gamma**2); every closed form of docs/maths.md, 'One qubit in a field'
(log Tr, P(n=1), <X>, the free energy, the conditionals) and its gradient must stay finite.
"""

from __future__ import annotations

import pytest
import torch

from qidbm.lightning import BoltzmannModule
from qidbm.models import QRBM, QiDBM
from qidbm.quantum import qubit_log_partition, qubit_prob_one, qubit_x_expectation


@pytest.mark.parametrize("make", [lambda: QRBM(12, 5), lambda: QRBM(12, 5, coupled_field=True),
                                  lambda: QiDBM([12, 5, 4], [1])])
@pytest.mark.parametrize("maximize", [False, True])
def test_huge_optimizer_step_leaves_every_closed_form_finite(make, maximize):
    torch.manual_seed(0)
    model = make()
    m = BoltzmannModule(model, chain_seed=0)
    v = (torch.rand(16, 12) < 0.4).float()
    opt = torch.optim.SGD(m.parameters(), lr=1e6, maximize=maximize)  # maximize: a step the wrong way
    loss, _ = m.loss(v)
    loss.backward()
    opt.step()
    _check_finite(model, v, m)


@pytest.mark.parametrize("value", [1e4, -1e4, 1e18, -1e18, 0.0, 1e30, -1e30])
def test_extreme_transverse_fields_are_valid(value):
    torch.manual_seed(0)
    model = QiDBM([12, 5, 4], [1])
    with torch.no_grad():
        model.transverse_parameter(1).fill_(value)
    m = BoltzmannModule(model, chain_seed=0)
    _check_finite(model, (torch.rand(16, 12) < 0.4).float(), m)


def _check_finite(model, v, m):
    for l in model.quantum_layers:
        assert torch.isfinite(model.transverse_parameter(l)).all()
    state, _ = m.negative.sample(model, v, m.kernel, m.generator)  # a Gibbs sweep with the new parameters
    assert all(s is None or torch.isfinite(s).all() for s in state)
    for l in range(model.num_layers):
        mean, _ = model.conditional(l, state)
        assert torch.isfinite(mean).all() and (mean >= 0).all() and (mean <= 1).all()
    for p in model.parameters():
        p.grad = None
    loss, _ = m.loss(v)
    assert torch.isfinite(loss)
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("gamma", [-1e18, -3.0, 0.0, 3.0, 1e18])
def test_closed_forms_use_abs_gamma(gamma):
    """log Tr, P(n=1) and <X> are even in Gamma and finite for any real value, |phi| up to 1e3."""
    phi = torch.tensor([-1e3, -2.0, 0.0, 2.0, 1e3], dtype=torch.float64)
    g = torch.full_like(phi, gamma, requires_grad=True)
    for f in (qubit_log_partition, qubit_prob_one, qubit_x_expectation):
        y = f(phi, g)
        assert torch.isfinite(y).all(), f.__name__
        y2 = f(phi, -g.detach())
        assert torch.allclose(y.abs() if f is qubit_x_expectation else y, y2.abs() if f is qubit_x_expectation else y2)
    p = qubit_prob_one(phi, g)
    assert ((p >= 0) & (p <= 1)).all()
    qubit_log_partition(phi, g).sum().backward()
    assert torch.isfinite(g.grad).all()
