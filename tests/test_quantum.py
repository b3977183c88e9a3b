"""The closed forms of qidbm.quantum against a dense 2x2 matrix exponential (float64)."""

import pytest
import torch

from qidbm.quantum import (
    softplus,
    qubit_draw_prob,
    qubit_log_partition,
    qubit_log_prob,
    qubit_metropolis_weight,
    qubit_prob_one,
    qubit_x_expectation,
    qubit_x_prob_plus,
    tanhc,
)

X = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
N = torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # |1><1|


def dense(phi: float, gamma: float):
    """log Tr e^{-H}, P(n=1), <X> for H = -phi n - gamma X by eigendecomposition."""
    H = -phi * N - gamma * X
    lam, U = torch.linalg.eigh(H)
    m = lam.min()
    w = torch.exp(-(lam - m))
    logz = torch.log(w.sum()) - m
    rho = (U * (w / w.sum())) @ U.T
    return logz.item(), rho[1, 1].item(), torch.trace(rho @ X).item()


def grid():
    g = torch.Generator().manual_seed(0)
    phis = torch.cat([torch.tensor([0.0, 1e-8, -1e-8, 1e3, -1e3, 30.0, -30.0]), torch.randn(40, generator=g) * 5])
    gammas = torch.cat([torch.tensor([0.0, 1e-8, 1e3, 4.0, 0.0, 2.0, 0.5]), torch.rand(40, generator=g) * 5])
    return phis.double(), gammas.double()


def test_against_dense_matrix_exponential():
    phis, gammas = grid()
    for phi, gamma in zip(phis.tolist(), gammas.tolist()):
        logz, p1, x = dense(phi, gamma)
        t_phi, t_g = torch.tensor(phi, dtype=torch.float64), torch.tensor(gamma, dtype=torch.float64)
        assert qubit_log_partition(t_phi, t_g).item() == pytest.approx(logz, rel=1e-12, abs=1e-12)
        assert qubit_prob_one(t_phi, t_g).item() == pytest.approx(p1, rel=1e-9, abs=1e-12)
        assert qubit_x_expectation(t_phi, t_g).item() == pytest.approx(x, rel=1e-9, abs=1e-12)
        assert qubit_x_prob_plus(t_phi, t_g).item() == pytest.approx((1 + x) / 2, abs=1e-12)
        for n, p in ((1.0, p1), (0.0, 1 - p1)):
            if p > 1e-300:
                lp = qubit_log_prob(torch.tensor(n, dtype=torch.float64), t_phi, t_g).item()
                assert lp == pytest.approx(torch.log(torch.tensor(p, dtype=torch.float64)).item(), rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 4e-16), (torch.float32, 2e-7)])
def test_draw_prob_is_prob_one_to_absolute_accuracy(dtype, atol):
    """The samplers' cheap form: P(n=1) within a few eps of 1/2, absolutely, over the dense grid,
    broadcast fields, the classical limit and phi = Gamma = 0."""
    phis, gammas = grid()
    g = torch.Generator().manual_seed(1)
    phi = torch.cat([phis, torch.randn(3000, generator=g, dtype=torch.float64) * 40])
    gam = torch.cat([gammas, torch.rand(3000, generator=g, dtype=torch.float64) * 10 * (torch.rand(3000, generator=g) < 0.8)])
    exact = torch.tensor([dense(a, b)[1] for a, b in zip(phi.tolist()[:47], gam.tolist()[:47])], dtype=torch.float64)
    p = qubit_draw_prob(phi.to(dtype), gam.to(dtype)).double()
    assert (p[:47] - exact).abs().max() <= atol
    assert (p - qubit_prob_one(phi, gam)).abs().max() <= atol
    assert ((p >= 0) & (p <= 1)).all()
    zero = torch.zeros_like(phi)
    assert (qubit_draw_prob(phi.to(dtype), zero.to(dtype)).double() - torch.sigmoid(phi)).abs().max() <= atol
    assert qubit_draw_prob(torch.zeros(1, dtype=dtype), torch.zeros(1, dtype=dtype)).item() == 0.5
    # a [B, n] field against a per-unit [n] transverse field, as the models call it
    phi2 = phi[:40].to(dtype).reshape(4, 10)
    gam2 = gam[:10].to(dtype)
    assert torch.allclose(qubit_draw_prob(phi2, gam2), qubit_prob_one(phi2, gam2.expand(4, 10)), rtol=0, atol=atol)
    # under autograd (no in-place passes) the very same values
    pa = qubit_draw_prob(phi2.clone().requires_grad_(True), gam2)
    assert torch.equal(pa.detach(), qubit_draw_prob(phi2, gam2))


def test_log_prob_extreme_fields_finite():
    phi = torch.tensor([1e3, -1e3, 50.0], dtype=torch.float64)
    g = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    lp0 = qubit_log_prob(torch.zeros(3, dtype=torch.float64), phi, g)
    # P(n=0 | phi=1e3, Gamma=0) = sigmoid(-1e3): log is -1e3, not -inf
    assert torch.allclose(lp0[:2], torch.tensor([-1e3, 0.0], dtype=torch.float64), atol=1e-9)
    assert torch.isfinite(lp0).all()


def test_classical_limit_equals_softplus_sigmoid():
    phi = torch.linspace(-40, 40, 2001, dtype=torch.float64)
    zero = torch.zeros_like(phi)
    assert torch.allclose(qubit_log_partition(phi, zero), torch.logaddexp(phi, torch.zeros_like(phi)), rtol=1e-14, atol=1e-300)
    assert torch.allclose(qubit_prob_one(phi, zero), torch.sigmoid(phi), rtol=1e-13, atol=1e-300)
    assert torch.equal(qubit_x_expectation(phi, zero), zero)
    lp1 = qubit_log_prob(torch.ones_like(phi), phi, zero)
    assert torch.allclose(lp1, torch.nn.functional.logsigmoid(phi), rtol=1e-12, atol=1e-12)


def test_gradients_are_the_statistics_and_finite_at_zero():
    phis, gammas = grid()
    phis = torch.cat([phis, torch.zeros(1, dtype=torch.float64)]).requires_grad_()
    gammas = torch.cat([gammas, torch.zeros(1, dtype=torch.float64)]).requires_grad_()
    qubit_log_partition(phis, gammas).sum().backward()
    assert torch.isfinite(phis.grad).all() and torch.isfinite(gammas.grad).all()
    with torch.no_grad():
        assert torch.allclose(phis.grad, qubit_prob_one(phis, gammas), atol=1e-12)
        assert torch.allclose(gammas.grad, qubit_x_expectation(phis, gammas) * torch.sign(gammas), atol=1e-12)
    assert phis.grad[-1].item() == 0.5 and gammas.grad[-1].item() == 0.0


def test_gradcheck_finite_differences():
    g = torch.Generator().manual_seed(1)
    phi = (torch.randn(6, 3, generator=g, dtype=torch.float64) * 3).requires_grad_()
    gamma = (torch.randn(3, generator=g, dtype=torch.float64) * 2).requires_grad_()  # broadcast, signed
    assert torch.autograd.gradcheck(qubit_log_partition, (phi, gamma))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_large_fields(dtype):
    phi = torch.tensor([[1e3, -1e3, 0.0], [5.0, -5.0, 1e-30]], dtype=dtype)
    gamma = torch.tensor([1e3, 0.0, 0.0], dtype=dtype)
    for f in (qubit_log_partition, qubit_prob_one, qubit_x_expectation):
        out = f(phi, gamma)
        assert out.shape == (2, 3) and out.dtype == dtype and torch.isfinite(out).all()
    p = qubit_prob_one(phi, gamma)
    assert ((p >= 0) & (p <= 1)).all()
    assert p[0, 1].item() == 0.0 and p[0, 2].item() == 0.5


def test_tanhc_series_and_value():
    r = torch.tensor([0.0, 1e-300, 1e-6, 1e-3, -0.5, 0.5, 20.0, 1e300], dtype=torch.float64)
    series = 1.0 - r**2 / 3.0 + 2.0 * r**4 / 15.0
    ref = torch.where(r.abs() < 1e-3, series, torch.tanh(r) / r)
    assert torch.allclose(tanhc(r), ref, rtol=1e-14, atol=0)
    assert tanhc(torch.tensor([0.0, 1e-40, 1e30], dtype=torch.float32)).isfinite().all()


def test_double_backward_through_closed_forms():
    # the saved first-order statistics must not cut the graph when create_graph=True
    g = torch.Generator().manual_seed(2)
    phi = (torch.randn(5, generator=g, dtype=torch.float64) * 3).requires_grad_()
    gamma = (torch.randn(5, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradgradcheck(qubit_log_partition, (phi, gamma))
    x = (torch.randn(7, generator=g, dtype=torch.float64) * 10).requires_grad_()
    assert torch.autograd.gradcheck(softplus, (x,)) and torch.autograd.gradgradcheck(softplus, (x,))


@pytest.mark.parametrize("gamma_scale", [0.0, 1e-4, 1.0, 30.0, 1e25])
def test_float32_matches_float64(gamma_scale):
    # the float32 closed forms stay within a few ulp of float64 over realistic and extreme fields
    g = torch.Generator().manual_seed(3)
    phi = torch.cat([torch.randn(2000, generator=g, dtype=torch.float64) * s for s in (1e-3, 1.0, 30.0, 300.0)])
    gamma = torch.rand(phi.shape, generator=g, dtype=torch.float64) * gamma_scale
    p64, g64 = phi.clone().requires_grad_(), gamma.clone().requires_grad_()
    p32, g32 = phi.float().requires_grad_(), gamma.float().requires_grad_()
    l64, l32 = qubit_log_partition(p64, g64), qubit_log_partition(p32, g32)
    assert torch.allclose(l32.double(), l64.detach(), rtol=1e-6, atol=1e-6)
    l64.sum().backward()
    l32.sum().backward()
    assert torch.allclose(p32.grad.double(), p64.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(g32.grad.double(), g64.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(qubit_prob_one(p32, g32).detach().double(), p64.grad, rtol=1e-5, atol=1e-6)


def test_softplus_full_precision():
    x = torch.tensor([-800.0, -40.0, 0.0, 20.04, 40.0, 800.0], dtype=torch.float64)
    assert torch.allclose(softplus(x), torch.logaddexp(x, torch.zeros_like(x)), rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_metropolis_weight_is_log_trace_plus_log_prob_minus_phi_n(dtype):
    # the collapsed form used by the exact sampler against its definition, evaluated in float64
    g = torch.Generator().manual_seed(4)
    phi = torch.cat([torch.randn(3000, generator=g, dtype=torch.float64) * s for s in (1e-3, 1.0, 10.0, 100.0)]
                    + [torch.tensor([0.0, 0.0, 1e3, -1e3, 80.0], dtype=torch.float64)])
    gamma = torch.cat([torch.rand(3000, generator=g, dtype=torch.float64) * s for s in (0.0, 1e-4, 1.0, 5.0)]
                      + [torch.tensor([0.0, 1.0, 0.0, 0.0, 1e-3], dtype=torch.float64)])
    for n_value in (0.0, 1.0):
        n = torch.full_like(phi, n_value)
        ref = qubit_log_partition(phi, gamma) + qubit_log_prob(n, phi, gamma) - phi * n
        got = qubit_metropolis_weight(n.to(dtype), phi.to(dtype), gamma.to(dtype)).double()
        assert torch.isfinite(got).all()
        tol = 1e-12 if dtype == torch.float64 else 2e-4
        assert torch.allclose(got, ref, rtol=tol, atol=tol)
    zero = torch.zeros(3, dtype=dtype)
    assert torch.equal(qubit_metropolis_weight(torch.tensor([0.0, 1.0, 1.0], dtype=dtype), torch.tensor([-3.0, 0.0, 2.0], dtype=dtype), zero), zero)
