"""DO-EM Algorithms 1 and 2, Kimura et al.'s em, monotone likelihood (DO-EM Corollary 4.5)."""
import pytest
import torch

from qidbm.exact import (
    cq_estep_statistics,
    cq_qrbm_hamiltonian,
    diagonal_state,
    do_em_cq,
    do_em_dense,
    kimura_em,
    maximize_concave,
    qbm_hamiltonian,
    rbm_hamiltonian,
    spins,
    sqrbm_hamiltonian,
    train_exact_gradient,
)


def random_q(k, gen, n_zero=2):
    q = torch.rand(k, dtype=torch.float64, generator=gen) ** 2
    q[torch.randperm(k, generator=gen)[:n_zero]] = 0.0
    return q / q.sum()


def test_monotone_log_likelihood_on_20_random_cq_models():
    """Acceptance: 20 random CQ models with 4 visible + 3 hidden qubits, each DO-EM step
    non-decreasing within 1e-9; also QELBO(theta_t) = LL(theta_t) (Petz saturation)."""
    h = qbm_hamiltonian(4, 3, visible_x=False, couplings=("ZZ", "ZX"), visible_couplings=("ZZ",),
                        hidden_couplings=("ZZ", "XX"))
    assert h.is_cq
    worst = float("inf")
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        theta0 = h.random_theta(gen, scale=1.0)
        q = random_q(16, gen)
        _, hist = do_em_cq(h, theta0, q, n_iter=4, m_max_iter=40)
        ll = torch.tensor(hist.log_likelihood)
        steps = ll[1:] - ll[:-1]
        worst = min(worst, float(steps.min()))
        assert (steps >= -1e-9).all(), f"seed {seed}: log-likelihood decreased by {-float(steps.min()):.3e}"
        assert ll[-1] > ll[0] + 1e-6, f"seed {seed}: no progress"
        qel = torch.tensor(hist.qelbo)
        assert torch.allclose(qel, ll[:-1], atol=1e-9), f"seed {seed}: QELBO is not tight at the E-step"
    assert worst >= -1e-9


def test_algorithm1_monotone_on_complex_cq_model(gen):
    h = sqrbm_hamiltonian(2, 2, "XYZ")
    q = random_q(4, gen, n_zero=1)
    _, hist = do_em_dense(h, h.random_theta(gen), diagonal_state(q), n_iter=3, m_max_iter=40)
    ll = torch.tensor(hist.log_likelihood)
    assert ((ll[1:] - ll[:-1]) >= -1e-9).all()


def test_algorithm2_equals_algorithm1_on_diagonal_data(gen):
    h = sqrbm_hamiltonian(3, 2, "XZ")
    th0 = h.random_theta(gen)
    q = random_q(8, gen)
    t2, h2 = do_em_cq(h, th0, q, n_iter=3, m_tol=1e-11)
    t1, h1 = do_em_dense(h, th0, diagonal_state(q), n_iter=3, m_tol=1e-11)
    assert torch.allclose(torch.tensor(h1.log_likelihood), torch.tensor(h2.log_likelihood), atol=1e-10)
    assert torch.allclose(torch.tensor(h1.qelbo), torch.tensor(h2.qelbo), atol=1e-10)
    # parameters along nearly flat directions (q has zeros) are ill-conditioned; the models are not
    from qidbm.exact import model_distribution

    assert torch.allclose(model_distribution(h, t1), model_distribution(h, t2), atol=1e-6)


def test_one_inner_gradient_step_is_the_likelihood_gradient(gen):
    """Kimura em with one m-step gradient step = one exact gradient-ascent step (EM gradient identity)."""
    h = cq_qrbm_hamiltonian(3, 2, zx=True)
    th0 = h.random_theta(gen)
    q = random_q(8, gen)
    t_em, _ = kimura_em(h, th0, q, n_iter=1, inner_steps=1, lr=0.05)
    t_gd, _ = train_exact_gradient(h, th0, q, n_iter=1, lr=0.05, method="blocks")
    t_dense, _ = train_exact_gradient(h, th0, q, n_iter=1, lr=0.05, method="dense")
    assert torch.allclose(t_em, t_gd, atol=1e-13)
    assert torch.allclose(t_em, t_dense, atol=1e-12)


def test_kimura_em_agrees_with_doem(gen):
    """The em algorithm (m-step by gradient steps run to convergence) = DO-EM with an L-BFGS M-step."""
    h = cq_qrbm_hamiltonian(3, 1)
    th0 = h.random_theta(gen)
    q = random_q(8, gen)
    t_k, hk = kimura_em(h, th0, q, n_iter=2, inner_steps=20000, lr=0.5, m_tol=1e-10)
    t_d, hd = do_em_cq(h, th0, q, n_iter=2, m_tol=1e-10)
    assert all(hk.m_step_converged) and all(hd.m_step_converged)
    assert torch.allclose(t_k, t_d, atol=1e-7)
    assert torch.allclose(torch.tensor(hk.log_likelihood), torch.tensor(hd.log_likelihood), atol=1e-10)


def test_zero_field_reduces_to_classical_em(gen):
    """Gamma = 0: the DO-EM E-step statistics are the classical RBM posterior expectations
    (<Z_j>_v = tanh(h_j + sum_i J_ij s_i(v))) and the whole trajectory equals that of the classical RBM."""
    n, m = 3, 2
    hq = cq_qrbm_hamiltonian(n, m)
    hc = rbm_hamiltonian(n, m)
    thc = hc.random_theta(gen)
    pc = hc.split(thc)
    thq = hq.join({"h_z": pc["h_z"], "J_zz": pc["J_zz"], "h_x_hidden": torch.zeros(m, dtype=torch.float64)})
    q = random_q(8, gen)
    e, _ = cq_estep_statistics(hc, thc, q)
    s = spins(n)
    tz = torch.tanh(pc["h_z"][n:] + s @ pc["J_zz"])  # [V, m]
    ref = {"h_z": -torch.cat([q @ s, q @ tz]), "J_zz": -torch.einsum("v,vi,vj->ij", q, s, tz)}
    got = hc.split(e)
    assert torch.allclose(got["h_z"], ref["h_z"], atol=1e-13)
    assert torch.allclose(got["J_zz"], ref["J_zz"], atol=1e-13)
    mask = hq.trainable_mask(["h_x_hidden"])
    tq, hist_q = do_em_cq(hq, thq, q, n_iter=3, mask=mask, m_tol=1e-11)
    tc, hist_c = do_em_cq(hc, thc, q, n_iter=3, m_tol=1e-11)
    assert torch.allclose(torch.tensor(hist_q.log_likelihood), torch.tensor(hist_c.log_likelihood), atol=1e-12)
    assert float(hq.split(tq)["h_x_hidden"].abs().max()) == 0.0


@pytest.mark.parametrize("method", ["lbfgs", "gd_backtracking", "gd"])
def test_maximize_concave_solvers(method, gen):
    A = torch.randn(5, 5, dtype=torch.float64, generator=gen)
    A = A @ A.T + torch.eye(5, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64, generator=gen)
    opt = torch.linalg.solve(A, b)

    def fn(x):
        return -(0.5 * x @ A @ x - b @ x), -(A @ x - b)

    res = maximize_concave(fn, torch.zeros(5, dtype=torch.float64), method=method, tol=1e-10, max_iter=20000,
                           lr=1.0 / float(torch.linalg.eigvalsh(A).max()))
    assert res.converged and torch.allclose(res.theta, opt, atol=1e-8)
    assert res.iterations > 0
    with pytest.raises(ValueError, match="method"):
        maximize_concave(fn, torch.zeros(5, dtype=torch.float64), method="newton")


def test_bad_data_raise(gen):
    h = cq_qrbm_hamiltonian(2, 1)
    with pytest.raises(ValueError, match="shape"):
        do_em_cq(h, h.random_theta(gen), torch.ones(3, dtype=torch.float64) / 3)
    with pytest.raises(ValueError, match="CQ"):
        g = qbm_hamiltonian(2, 1)
        do_em_cq(g, g.random_theta(gen), torch.ones(4, dtype=torch.float64) / 4)
