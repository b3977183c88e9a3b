"""Exact-gradient (Daleckii-Krein) and bound-based (Amin et al.) baselines."""
import pytest
import torch

from qidbm.exact import (
    bound_log_likelihood_and_grad,
    cq_log_likelihood_and_grad,
    cq_qrbm_hamiltonian,
    exact_log_likelihood_and_grad,
    frechet_exp,
    gibbs_state,
    partial_trace_hidden,
    log_likelihood,
    qbm_hamiltonian,
    train_bound_qbm,
    train_exact_gradient,
)


def random_q(k, gen, n_zero=1):
    q = torch.rand(k, dtype=torch.float64, generator=gen)
    q[:n_zero] = 0
    return q / q.sum()


def sym(d, gen, complex_=False):
    A = torch.randn(d, d, dtype=torch.float64, generator=gen)
    if complex_:
        A = torch.complex(A, torch.randn(d, d, dtype=torch.float64, generator=gen))
    return (A + A.mH) / 2


@pytest.mark.parametrize("complex_", [False, True])
def test_frechet_exp_matches_finite_differences_and_autograd(complex_, gen):
    H, E = sym(6, gen, complex_), sym(6, gen, complex_)
    H[0, 0] = H[1, 1]  # not needed for degeneracy, but keep values O(1)
    eps = 1e-6
    fd = (torch.linalg.matrix_exp(-(H + eps * E)) - torch.linalg.matrix_exp(-(H - eps * E))) / (2 * eps)
    dk = frechet_exp(H, E)
    assert torch.allclose(dk, fd, atol=1e-8)
    _, jvp = torch.func.jvp(lambda X: torch.linalg.matrix_exp(-X), (H,), (E,))
    assert torch.allclose(dk, jvp, atol=1e-12)


def test_frechet_exp_with_degenerate_spectrum(gen):
    Q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=gen))
    H = Q @ torch.diag(torch.tensor([0.5, 0.5, 0.5, -1.0, 2.0], dtype=torch.float64)) @ Q.T
    E = sym(5, gen)
    _, jvp = torch.func.jvp(lambda X: torch.linalg.matrix_exp(-X), (H,), (E,))
    assert torch.allclose(frechet_exp(H, E), jvp, atol=1e-12)


def fd_grad(f, theta, eps=1e-5):
    g = torch.zeros_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[i] = eps
        g[i] = (f(theta + e) - f(theta - e)) / (2 * eps)
    return g


def test_exact_gradient_matches_finite_differences_measured(gen):
    """Non-CQ QBM (visible X fields and XX couplings): sum_v q_v log Tr(Lambda_v rho)."""
    h = qbm_hamiltonian(2, 2, couplings=("ZZ", "XX"), hidden_couplings=("ZZ",))
    th = h.random_theta(gen)
    q = random_q(4, gen)

    def ll(t):
        p = torch.diagonal(partial_trace_hidden(gibbs_state(h.dense(t)), 2, 2))
        return float((q[q > 0] * p[q > 0].log()).sum())

    L, g, _ = exact_log_likelihood_and_grad(h, th, q, objective="measured")
    assert abs(float(L) - ll(th)) < 1e-12
    assert torch.allclose(g, fd_grad(ll, th), atol=1e-8)


def test_exact_gradient_matches_finite_differences_quantum(gen):
    """Tr eta_V log rho_V for a non-diagonal (complex) eta_V and a QBM with visible fields."""
    h = qbm_hamiltonian(2, 1, couplings=("ZZ", "XX"))
    th = h.random_theta(gen)
    A = torch.complex(torch.randn(4, 4, dtype=torch.float64, generator=gen), torch.randn(4, 4, dtype=torch.float64, generator=gen))
    eta = A @ A.mH
    eta = eta / torch.trace(eta).real

    def ll(t):
        return float(log_likelihood(eta, partial_trace_hidden(gibbs_state(h.dense(t)), 2, 1)))

    L, g, _ = exact_log_likelihood_and_grad(h, th, eta, objective="quantum")
    assert abs(float(L) - ll(th)) < 1e-12
    assert torch.allclose(g, fd_grad(ll, th), atol=1e-8)


def test_cq_gradients_agree_and_bound_is_tight(gen):
    h = cq_qrbm_hamiltonian(3, 2, zx=True)
    th = h.random_theta(gen)
    q = random_q(8, gen)
    L1, g1, _ = exact_log_likelihood_and_grad(h, th, q)
    L2, g2, _ = cq_log_likelihood_and_grad(h, th, q)
    Lq, gq, _ = exact_log_likelihood_and_grad(h, th, torch.diag(q), objective="quantum")
    Lb, gb, _ = bound_log_likelihood_and_grad(h, th, q)
    Lbb, gbb, _ = bound_log_likelihood_and_grad(h, th, q, negative_phase="blocks")
    for L, g in ((L2, g2), (Lq, gq), (Lb, gb), (Lbb, gbb)):
        assert abs(float(L - L1)) < 1e-12
        assert torch.allclose(g, g1, atol=1e-11)


def test_bound_is_a_lower_bound_with_visible_fields(gen):
    h = qbm_hamiltonian(2, 2)
    th = h.random_theta(gen, scale=1.5)
    q = random_q(4, gen, n_zero=0)
    L, _, _ = exact_log_likelihood_and_grad(h, th, q)
    Lb, gb, _ = bound_log_likelihood_and_grad(h, th, q)
    assert float(Lb) < float(L)

    def bound(t):
        return float(bound_log_likelihood_and_grad(h, t, q)[0])

    # the bound gradient is the gradient of the bound (Amin et al. Eq. 15)
    assert torch.allclose(gb, fd_grad(bound, th), atol=1e-8)


def test_training_loops(gen):
    h = cq_qrbm_hamiltonian(3, 1)
    th0 = h.random_theta(gen)
    q = random_q(8, gen)
    t_d, hd = train_exact_gradient(h, th0, q, n_iter=3, lr=0.1, method="dense")
    t_b, hb = train_exact_gradient(h, th0, q, n_iter=3, lr=0.1, method="blocks")
    assert torch.allclose(t_d, t_b, atol=1e-12)
    assert hd.log_likelihood[-1] > hd.log_likelihood[0]
    t_q, hq = train_bound_qbm(h, th0, q, n_iter=3, lr=0.1)
    sl = h.groups["h_x_hidden"][0]
    assert float(t_q[sl] - th0[sl]) == 0.0  # transverse field fixed, as in Amin et al.
    assert hq.log_likelihood[-1] > hq.log_likelihood[0]
    t_a, ha = train_exact_gradient(h, th0, q, n_iter=3, lr=0.05, optimizer="adam", method="blocks")
    assert ha.log_likelihood[-1] > ha.log_likelihood[0]
