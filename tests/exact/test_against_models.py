"""Cross-check: the foundation package's QRBM.free_energy against the dense density matrix.

p(v) = softmax(-F(v)) over all v must equal diag(Tr_H exp(-H)/Z) of the spin-convention
Hamiltonian obtained with the map of docs/maths.md, 'Spin-convention map', to 1e-10.
"""
import pytest
import torch

from qidbm import models
from qidbm.exact import all_bitstrings, cq_qrbm_hamiltonian, gibbs_state, model_distribution, qrbm_theta_from_rbm, visible_distribution


def _random_qrbm(n, m, seed, **kw):
    torch.manual_seed(seed)
    model = models.QRBM(n, m, **kw).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.8)
    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_qrbm_free_energy_matches_dense_gibbs_state(seed):
    n, m = 4, 3
    model = _random_qrbm(n, m, seed)
    v = all_bitstrings(n)
    with torch.no_grad():
        p_model = torch.softmax(-model.free_energy(v), dim=0)
    h = cq_qrbm_hamiltonian(n, m)
    theta, _ = qrbm_theta_from_rbm(h, model.visible_bias.detach(), model.hidden_bias.detach(),
                                   model.weight.detach(), model.transverse_field.detach().abs())
    p_dense = visible_distribution(gibbs_state(h.dense(theta)), n, m)
    assert torch.allclose(p_model, p_dense, atol=1e-10, rtol=0)
    assert torch.allclose(p_model, model_distribution(h, theta, "blocks"), atol=1e-10, rtol=0)


def test_qrbm_zero_field_and_sign_of_gamma():
    """Gamma enters only through |transverse_field|; Gamma = 0 gives the classical RBM."""
    n, m = 3, 2
    model = _random_qrbm(n, m, 7)
    v = all_bitstrings(n)
    h = cq_qrbm_hamiltonian(n, m)
    for tf in (model.transverse_field.detach(), -model.transverse_field.detach(), torch.zeros(m, dtype=torch.float64)):
        with torch.no_grad():
            model.transverse_field.copy_(tf)
            p_model = torch.softmax(-model.free_energy(v), dim=0)
        theta, _ = qrbm_theta_from_rbm(h, model.visible_bias.detach(), model.hidden_bias.detach(),
                                       model.weight.detach(), tf.abs())
        assert torch.allclose(p_model, visible_distribution(gibbs_state(h.dense(theta)), n, m), atol=1e-10, rtol=0)


def test_qrbm_coupled_field_matches_dense():
    n, m = 3, 2
    model = _random_qrbm(n, m, 3, coupled_field=True)
    v = all_bitstrings(n)
    with torch.no_grad():
        p_model = torch.softmax(-model.free_energy(v), dim=0)
    h = cq_qrbm_hamiltonian(n, m, zx=True)
    theta, _ = qrbm_theta_from_rbm(h, model.visible_bias.detach(), model.hidden_bias.detach(), model.weight.detach(),
                                   model.transverse_field.detach(), model.transverse_weight.detach())
    assert torch.allclose(p_model, visible_distribution(gibbs_state(h.dense(theta)), n, m), atol=1e-10, rtol=0)
