"""Petz recovery map, Condition S and the QELBO (DO-EM section 4)."""
import torch

from qidbm.exact import (
    check_condition_s,
    cq_qrbm_hamiltonian,
    diagonal_state,
    gibbs,
    is_density_operator,
    log_likelihood,
    partial_trace_hidden,
    petz_recovery,
    qbm_hamiltonian,
    qelbo,
    relative_entropy,
    sqrbm_hamiltonian,
)


def random_q(k, gen, zeros=1):
    q = torch.rand(k, dtype=torch.float64, generator=gen)
    q[:zeros] = 0.0
    return q / q.sum()


def test_petz_valid_and_reverses_partial_trace_under_condition_s(gen):
    h = sqrbm_hamiltonian(3, 2, "XYZ")  # complex CQ model
    st = gibbs(h.dense(h.random_theta(gen)))
    eta_v = diagonal_state(random_q(8, gen))
    rep = check_condition_s(eta_v, st.rho, 3, 2)
    assert rep.satisfied and rep.sigma_v_full_rank
    out = petz_recovery(eta_v, st, 3, 2)
    assert is_density_operator(out, atol=1e-12)
    assert torch.allclose(partial_trace_hidden(out, 3, 2), eta_v.to(out.dtype), atol=1e-13)
    # recovers sigma itself from sigma_V, and any state of the form sum q_v |v><v| (x) sigma_{H|v}
    assert torch.allclose(petz_recovery(partial_trace_hidden(st.rho, 3, 2), st, 3, 2), st.rho, atol=1e-12)
    assert torch.allclose(petz_recovery(eta_v, st.rho, 3, 2), out, atol=1e-11)  # matrix input path
    # saturation of monotonicity (Ruskai / Petz): D(P(eta)||sigma) = D(eta||sigma_V)
    d_big = relative_entropy(out, st.rho)
    d_small = relative_entropy(eta_v.to(out.dtype), partial_trace_hidden(st.rho, 3, 2))
    assert abs(float(d_big - d_small)) < 1e-9


def test_petz_without_condition_s(gen):
    """A QBM with visible transverse fields: Condition S fails, Petz output is still a state
    (trace preserving since sigma_V is full rank) but does not reverse the partial trace."""
    h = qbm_hamiltonian(2, 1, couplings=("ZZ", "XX"))
    st = gibbs(h.dense(h.random_theta(gen, scale=1.5)))
    eta_v = diagonal_state(random_q(4, gen, zeros=0))
    rep = check_condition_s(eta_v, st.rho, 2, 1)
    assert not rep.satisfied and not rep.sigma_block_diagonal and rep.max_offblock > 1e-3
    out = petz_recovery(eta_v, st, 2, 1)
    assert is_density_operator(out, atol=1e-12)
    assert (partial_trace_hidden(out, 2, 1) - eta_v).abs().max() > 1e-4


def test_condition_s_with_nondiagonal_eta_in_its_eigenbasis(gen):
    """Rotate a CQ model and the data by the same visible unitary: Condition S holds in the rotated basis."""
    h = cq_qrbm_hamiltonian(2, 1)
    st = gibbs(h.dense(h.random_theta(gen)))
    Q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=gen))
    U = torch.kron(Q.contiguous(), torch.eye(2, dtype=torch.float64))
    sigma = U @ st.rho @ U.T
    eta = Q @ torch.diag(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)) @ Q.T
    rep = check_condition_s(eta, sigma, 2, 1)
    assert rep.satisfied
    out = petz_recovery(eta, sigma, 2, 1)
    assert torch.allclose(partial_trace_hidden(out, 2, 1), eta, atol=1e-12)


def test_qelbo_lower_bound_and_equality_at_petz(gen):
    h = cq_qrbm_hamiltonian(3, 2, zx=True)
    st = gibbs(h.dense(h.random_theta(gen)))
    eta_v = diagonal_state(random_q(8, gen))
    ll = float(log_likelihood(eta_v, partial_trace_hidden(st.rho, 3, 2)))
    # any extension: eta_V (x) random hidden state
    tau = torch.randn(4, 4, dtype=torch.float64, generator=gen)
    tau = tau @ tau.T
    tau = tau / torch.trace(tau)
    other = torch.kron(eta_v, tau)
    assert float(qelbo(other, st.log(), 3, 2)) < ll - 1e-6
    petz = petz_recovery(eta_v, st, 3, 2)
    assert abs(float(qelbo(petz, st.log(), 3, 2)) - ll) < 1e-10
    # general (non-CQ) model: still a lower bound
    g = qbm_hamiltonian(2, 2, couplings=("ZZ", "XX"))
    sg = gibbs(g.dense(g.random_theta(gen)))
    eta2 = diagonal_state(random_q(4, gen, zeros=0))
    ll2 = float(log_likelihood(eta2, partial_trace_hidden(sg.rho, 2, 2)))
    # a generic entangled extension: (eta^1/2 w_V^-1/2 (x) I) w (w_V^-1/2 eta^1/2 (x) I)
    w = torch.randn(16, 16, dtype=torch.float64, generator=gen)
    w = w @ w.T
    w = w / torch.trace(w)
    from qidbm.exact import inv_sqrtm_psd, sqrtm_psd

    K = torch.kron(sqrtm_psd(eta2) @ inv_sqrtm_psd(partial_trace_hidden(w, 2, 2)), torch.eye(4, dtype=torch.float64))
    ext = K @ w @ K.T
    assert torch.allclose(partial_trace_hidden(ext, 2, 2), eta2, atol=1e-12)
    assert float(qelbo(ext, sg.log(), 2, 2)) <= ll2 + 1e-10
