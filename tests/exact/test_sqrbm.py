"""sqRBM closed forms (Demidik et al., Propositions 1-2) against the dense density matrix."""
import math

import pytest
import torch

from qidbm.exact import (
    exact_log_likelihood_and_grad,
    gibbs_state,
    log_cosh_norm,
    sqrbm_hamiltonian,
    sqrbm_init,
    sqrbm_log_probs,
    sqrbm_nll,
    sqrbm_nll_grad,
    sqrbm_params_to_theta,
    spins,
    visible_distribution,
)


@pytest.mark.parametrize("paulis", ["Z", "XZ", "YZ", "XYZ"])
def test_closed_form_probabilities_match_dense(paulis, gen):
    n, m = 3, 2
    params = sqrbm_init(n, m, paulis, generator=gen)
    h = sqrbm_hamiltonian(n, m, paulis)
    theta = sqrbm_params_to_theta(h, params)
    p_dense = visible_distribution(gibbs_state(h.dense(theta)), n, m)
    assert torch.allclose(sqrbm_log_probs(params, n).exp(), p_dense, atol=1e-13)


@pytest.mark.parametrize("paulis", ["Z", "XZ", "XYZ"])
def test_closed_form_gradients_match_autograd_and_dense(paulis, gen):
    n, m = 3, 2
    params = sqrbm_init(n, m, paulis, generator=gen)
    q = torch.rand(2**n, dtype=torch.float64, generator=gen)
    q[0] = 0
    q = q / q.sum()
    grads = sqrbm_nll_grad(params, q, n)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    sqrbm_nll(leaves, q, n).backward()
    for k in params:
        assert torch.allclose(grads[k], leaves[k].grad, atol=1e-12), k
    h = sqrbm_hamiltonian(n, m, paulis)
    _, g_dense, _ = exact_log_likelihood_and_grad(h, sqrbm_params_to_theta(h, params), q)
    assert torch.allclose(-g_dense, sqrbm_params_to_theta(h, grads), atol=1e-11)


def test_rbm_closed_form_is_classical_rbm(gen):
    """W = {Z}: p(v) = sum_h exp(-a.s(v) - b.s(h) - s(v)^T w s(h)) over +-1 hidden spins."""
    n, m = 3, 2
    params = sqrbm_init(n, m, "Z", generator=gen)
    sv, sh = spins(n), spins(m)
    E = (sv @ params["a"])[:, None] + (sh @ params["b"][0])[None, :] + torch.einsum("vi,ij,hj->vh", sv, params["w"][0], sh)
    p = torch.softmax(-E.reshape(-1), 0).reshape(2**n, 2**m).sum(-1)
    assert torch.allclose(sqrbm_log_probs(params, n).exp(), p, atol=1e-14)


def test_log_cosh_norm_is_smooth_at_zero():
    sq = torch.tensor([0.0, 1e-12, 1e-9, 1e-3, 4.0, 1e6], dtype=torch.float64, requires_grad=True)
    val = log_cosh_norm(sq)
    ref = torch.log(torch.cosh(torch.sqrt(sq.detach()[:5])))
    assert torch.allclose(val[:5], ref, atol=1e-15)
    assert abs(float(val[5].detach()) - (1e3 - math.log(2))) < 1e-9
    val.sum().backward()
    assert torch.isfinite(sq.grad).all() and abs(float(sq.grad[0]) - 0.5) < 1e-12


def test_batched_parameters(gen):
    n, m = 4, 3
    params = sqrbm_init(n, m, "XYZ", batch=(5,), generator=gen)
    lp = sqrbm_log_probs(params, n)
    assert lp.shape == (5, 16)
    one = {k: v[2] for k, v in params.items()}
    assert torch.allclose(lp[2], sqrbm_log_probs(one, n), atol=1e-14)
    q = torch.full((16,), 1 / 16, dtype=torch.float64)
    g = sqrbm_nll_grad(params, q, n)
    assert torch.allclose(g["w"][2], sqrbm_nll_grad(one, q, n)["w"], atol=1e-14)


def test_bad_pauli_set():
    with pytest.raises(ValueError, match="paulis"):
        sqrbm_hamiltonian(2, 1, "XXZ")
