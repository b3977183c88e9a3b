"""Gibbs states, partial traces, entropies, relative entropy and the CQ block evaluation."""
import math

import pytest
import torch

from qidbm.exact import (
    block_exp_states,
    cq_evaluate,
    cq_qrbm_hamiltonian,
    gibbs,
    gibbs_state,
    inv_sqrtm_psd,
    is_density_operator,
    kl_divergence,
    log_partition,
    logm_psd,
    model_distribution,
    partial_trace,
    partial_trace_hidden,
    qbm_hamiltonian,
    relative_entropy,
    sqrbm_hamiltonian,
    sqrtm_psd,
    visible_distribution,
    von_neumann_entropy,
)


def rand_density(d, gen, rank=None, complex_=False):
    rank = rank or d
    dt = torch.complex128 if complex_ else torch.float64
    A = torch.randn(d, rank, dtype=dt, generator=gen) if not complex_ else torch.complex(
        torch.randn(d, rank, dtype=torch.float64, generator=gen), torch.randn(d, rank, dtype=torch.float64, generator=gen))
    rho = A @ A.mH
    return rho / torch.diagonal(rho).sum()


def test_gibbs_matches_matrix_exp(gen):
    h = qbm_hamiltonian(2, 2, couplings=("ZZ", "XX"))
    H = h.dense(h.random_theta(gen, scale=2.0))
    ref = torch.linalg.matrix_exp(-H)
    assert torch.allclose(gibbs_state(H), ref / torch.trace(ref), atol=1e-13)
    assert torch.allclose(log_partition(H), torch.log(torch.trace(ref)), atol=1e-12)
    st = gibbs(H)
    assert torch.allclose(st.log(), -H - st.log_z * torch.eye(16, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(st.sqrt() @ st.sqrt(), st.rho, atol=1e-13)
    assert is_density_operator(st.rho)


def test_gibbs_is_stable_for_large_energies():
    H = torch.diag(torch.tensor([1000.0, 1001.0, 5000.0, -3000.0], dtype=torch.float64))
    rho = gibbs_state(H)
    assert torch.isfinite(rho).all() and abs(float(rho[3, 3]) - 1) < 1e-12


def test_partial_trace_general_and_hidden(gen):
    rho = rand_density(16, gen, complex_=True)
    a = rand_density(4, gen)
    b = rand_density(4, gen)
    prod = torch.kron(a, b)
    assert torch.allclose(partial_trace_hidden(prod, 2, 2), a, atol=1e-14)
    assert torch.allclose(partial_trace(prod, [2, 3], 4), b, atol=1e-14)
    # keeping qubits in swapped order swaps the factors
    assert torch.allclose(partial_trace(torch.kron(a, b), [2, 3, 0, 1], 4), torch.kron(b, a), atol=1e-14)
    assert torch.allclose(partial_trace(rho, [0, 1], 4), partial_trace_hidden(rho, 2, 2), atol=1e-14)
    p = visible_distribution(rho, 2, 2)
    assert torch.allclose(p, torch.diagonal(partial_trace_hidden(rho, 2, 2)).real, atol=1e-14)


def test_matrix_functions(gen):
    rho = rand_density(8, gen, rank=5)
    s = sqrtm_psd(rho)
    assert torch.allclose(s @ s, rho, atol=1e-13)
    inv = inv_sqrtm_psd(rho)
    proj = s @ inv  # projector onto the support
    assert torch.allclose(proj @ proj, proj, atol=1e-10)
    assert abs(float(torch.trace(proj)) - 5) < 1e-8
    full = rand_density(8, gen)
    assert torch.allclose(torch.linalg.matrix_exp(logm_psd(full)), full, atol=1e-12)


def test_entropy_and_relative_entropy(gen):
    q = torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    p = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    assert abs(float(von_neumann_entropy(torch.diag(q))) - 1.5 * math.log(2)) < 1e-12
    assert abs(float(relative_entropy(torch.diag(q), torch.diag(p))) - float(kl_divergence(q, p))) < 1e-12
    # support violation -> +inf, both directions
    assert math.isinf(float(relative_entropy(torch.diag(p), torch.diag(q))))
    assert math.isinf(float(kl_divergence(p, q)))
    eta, rho = rand_density(8, gen, complex_=True), rand_density(8, gen, complex_=True)
    d = float(relative_entropy(eta, rho))
    ref = float(torch.trace(eta @ (logm_psd(eta) - logm_psd(rho))).real)
    assert d > 0 and abs(d - ref) < 1e-10
    assert abs(float(relative_entropy(rho, rho))) < 1e-10
    # monotonicity under partial trace (Lindblad)
    assert float(relative_entropy(partial_trace_hidden(eta, 2, 1), partial_trace_hidden(rho, 2, 1))) <= d + 1e-12


def test_block_closed_form_matches_eigh(gen):
    x = torch.randn(50, 2, 2, dtype=torch.float64, generator=gen)
    x = x + x.mT
    x[0] = torch.eye(2, dtype=torch.float64) * 0.3  # r = 0 exactly
    lz, rho = block_exp_states(x)
    st = gibbs(x)
    assert torch.allclose(lz, st.log_z, atol=1e-13)
    assert torch.allclose(rho, st.rho, atol=1e-13)


@pytest.mark.parametrize("paulis", ["XZ", "XYZ"])
def test_cq_evaluation_matches_dense(paulis, gen):
    h = sqrbm_hamiltonian(3, 2, paulis)
    th = h.random_theta(gen)
    ev = cq_evaluate(h, th)
    rho = gibbs_state(h.dense(th))
    assert torch.allclose(ev.probs, visible_distribution(rho, 3, 2), atol=1e-13)
    assert torch.allclose(ev.model_expectations(), h.term_expectations(rho), atol=1e-12)
    assert torch.allclose(model_distribution(h, th, "dense"), model_distribution(h, th, "blocks"), atol=1e-13)


def test_zero_field_qrbm_is_classical_rbm(gen):
    """Gamma = 0: the QRBM's p(v) equals the classical RBM's, by enumerating h."""
    n, m = 3, 2
    h = cq_qrbm_hamiltonian(n, m)
    th = h.random_theta(gen)
    th[h.groups["h_x_hidden"][0]:h.groups["h_x_hidden"][0] + m] = 0.0
    parts = h.split(th)
    hz, J = parts["h_z"], parts["J_zz"]
    from qidbm.exact import spins

    s = spins(n + m)
    energy = -(s * hz).sum(-1) - torch.einsum("ki,ij,kj->k", s[:, :n], J, s[:, n:])
    joint = torch.softmax(-energy, 0).reshape(2**n, 2**m).sum(-1)
    assert torch.allclose(model_distribution(h, th), joint, atol=1e-14)
