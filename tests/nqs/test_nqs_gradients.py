"""Parameter gradients against finite differences (float64).

The energy gradient is checked with |Psi|^2 integrated exactly on a fine grid (one
particle in 1D), so the VMC estimator 2(<E_L O> - <E_L><O>) must equal the derivative
of the exact variational energy E(theta) = int Psi H Psi / int Psi^2.
"""


import numpy as np
import pytest
import torch

from qidbm.nqs import (
    HarmonicTrap,
    MetropolisSampler,
    RBMWaveFunction,
    VMCModule,
    local_energy,
    sr_direction,
    vmc_loss,
)

D = torch.float64



GRID = torch.linspace(-14.0, 14.0, 28001, dtype=D).unsqueeze(-1)


def _exact_energy(wf, ham):
    """<H> by quadrature: sum E_L |Psi|^2 / sum |Psi|^2 on a uniform grid (spectral accuracy)."""
    with torch.no_grad():
        lp = wf.log_prob(GRID)
        w = torch.exp(lp - lp.max())
        w = w / w.sum()
        return float((w * local_energy(ham, wf, GRID)).sum())


@pytest.mark.parametrize("form", ["sqrt", "amplitude"])
def test_vmc_energy_gradient_matches_finite_differences(form):
    torch.manual_seed(3)
    wf = RBMWaveFunction(1, 1, 3, form=form, init_std=0.5, train_variance=True, omega=1.3)
    ham = HarmonicTrap(1, 1, omega=1.3)
    # the VMC estimator, with exact weights in place of samples
    lp = wf.log_prob(GRID).detach()
    w = torch.exp(lp - lp.max())
    w = w / w.sum()
    e = local_energy(ham, wf, GRID).detach()
    loss = vmc_loss(e, wf.log_psi(GRID), weights=w)
    params = [p for p in wf.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    assert len(params) == 4  # W, mu, b, log s^2
    h = 1e-5
    checked = 0
    for p, g in zip(params, grads):
        for k in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[k] += h
                ep = _exact_energy(wf, ham)
                p.view(-1)[k] -= 2 * h
                em = _exact_energy(wf, ham)
                p.view(-1)[k] += h
            fd = (ep - em) / (2 * h)
            assert g.view(-1)[k].item() == pytest.approx(fd, rel=1e-5, abs=1e-8)
            checked += 1
    assert checked == 3 + 1 + 3 + 1
    # the gradient is not trivially small at this random point
    assert max(abs(g).max().item() for g in grads) > 1e-2


def test_per_sample_log_psi_gradients_match_finite_differences():
    torch.manual_seed(4)
    m = VMCModule(
        RBMWaveFunction(2, 2, 3, jastrow=True, train_variance=True, init_std=0.3, jastrow_beta=0.6),
        HarmonicTrap(2, 2, interaction=True), MetropolisSampler(),
    )
    x = torch.randn(6, 4, dtype=D)
    O = m.per_sample_log_psi_grads(x)
    params = [p for p in m.wavefunction.parameters() if p.requires_grad]
    assert O.shape == (6, sum(p.numel() for p in params))
    h = 1e-6
    cols = []
    for p in params:
        for k in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[k] += h
                fp = m.wavefunction.log_psi(x)
                p.view(-1)[k] -= 2 * h
                fm = m.wavefunction.log_psi(x)
                p.view(-1)[k] += h
            cols.append((fp - fm) / (2 * h))
    torch.testing.assert_close(O, torch.stack(cols, 1), rtol=1e-6, atol=1e-8)


def test_frozen_variance_has_no_gradient_entry():
    m = VMCModule(RBMWaveFunction(1, 2, 2), HarmonicTrap(1, 2), MetropolisSampler())
    O = m.per_sample_log_psi_grads(torch.randn(3, 2, dtype=D))
    assert O.shape[1] == 2 * 2 + 2 + 2  # W, mu, b; no log_variance


def test_sr_direction_solves_regularised_normal_equations():
    g = torch.Generator().manual_seed(0)
    O = torch.randn(500, 7, generator=g, dtype=D)
    e = torch.randn(500, generator=g, dtype=D) + O[:, 2]
    delta = sr_direction(O, e, shift=1e-2)
    On, en = O.numpy(), e.numpy()
    Oc = On - On.mean(0)
    S = Oc.T @ Oc / 500 + 1e-2 * np.eye(7)
    F = Oc.T @ (en - en.mean()) / 500
    np.testing.assert_allclose(delta.numpy(), np.linalg.solve(S, F), rtol=1e-10)
    # F is half the plain VMC gradient: check against vmc_loss on a linear log Psi
    theta = torch.zeros(7, dtype=D, requires_grad=True)
    (grad,) = torch.autograd.grad(vmc_loss(e, O @ theta), theta)
    np.testing.assert_allclose(grad.numpy(), 2 * F, rtol=1e-10)
