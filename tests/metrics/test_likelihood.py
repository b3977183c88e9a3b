"""Exact and AIS likelihoods against the dense oracle and enumeration."""

import pytest
import torch

from qidbm.metrics.likelihood import (
    ais_log_likelihood,
    ais_log_partition,
    base_rate_visible_bias,
    exact_log_partition,
    exact_log_prob,
)
from qidbm.models import DBM, GRBM, QGRBM, QRBM, RBM, QiDBM
from tests.dense import bits, dense_hamiltonian, gibbs_diagonal


def rnd(m, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.2 if "log_var" in n else scale))
    return m


@pytest.mark.parametrize("make", [lambda: QRBM(4, 3), lambda: QiDBM([3, 2, 2], [1]), lambda: DBM([3, 2, 2]),
                                  lambda: RBM(5, 3), lambda: RBM(3, 5)])
def test_exact_log_partition_matches_dense(make):
    m = rnd(make().double(), 0)
    _, logz = gibbs_diagonal(dense_hamiltonian(m)[0])
    assert exact_log_partition(m).item() == pytest.approx(logz.item(), abs=1e-9)
    lp = exact_log_prob(m, bits(m.n_visible))
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-9)


def test_exact_grbm_log_partition_by_quadrature():
    m = rnd(GRBM(1, 3).double(), 1)
    grid = torch.linspace(-40, 40, 400001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        f = -m.free_energy(grid)
    num = torch.logsumexp(f, 0) + torch.log(grid[1, 0] - grid[0, 0])
    assert exact_log_partition(m).item() == pytest.approx(num.item(), abs=1e-6)


@pytest.mark.parametrize("make,seed", [(lambda: RBM(8, 5), 0), (lambda: QRBM(8, 5), 1), (lambda: QiDBM([6, 4, 4], [1]), 2),
                                       (lambda: QRBM(6, 4, coupled_field=True), 3)])
def test_ais_within_three_standard_errors(make, seed):
    m = rnd(make().double(), seed)
    exact = exact_log_partition(m).item()
    r = ais_log_partition(m, num_runs=64, num_betas=600, generator=torch.Generator().manual_seed(seed))
    assert abs(r.log_z - exact) < 3 * r.stderr + 1e-3, (r, exact)


def test_ais_log_likelihood_rbm_and_dbm():
    m = rnd(RBM(6, 3).double(), 4)
    v = bits(6)[::5]
    assert torch.allclose(ais_log_likelihood(m, v, exact_log_partition(m).item()), exact_log_prob(m, v), atol=1e-10)
    d = rnd(QiDBM([5, 3, 3], [1]).double(), 5, scale=0.7)
    v = bits(5)[::3]
    est = ais_log_likelihood(d, v, exact_log_partition(d).item(), num_posterior_samples=400,
                             generator=torch.Generator().manual_seed(0))
    assert torch.allclose(est, exact_log_prob(d, v), atol=0.05)


def test_base_rate_and_errors():
    data = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = base_rate_visible_bias(data)
    assert b[0] > 5 and abs(b[1]) < 1e-9
    with pytest.raises(ValueError, match="ais_log_partition"):
        exact_log_partition(RBM(30, 30))
    with pytest.raises(ValueError, match="Gaussian"):
        exact_log_partition(QGRBM(2, 2))
    with pytest.raises(ValueError, match="num_runs"):
        ais_log_partition(RBM(2, 2), num_runs=1)
