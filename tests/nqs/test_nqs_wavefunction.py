"""Wave function and local energy: exact oracles (float64)."""

import math

import pytest
import torch

from qidbm.models import GRBM
from qidbm.nqs import (
    HarmonicTrap,
    PadeJastrow,
    RBMWaveFunction,
    autograd_derivatives,
    local_energy,
    taut_one_body_density,
)

D = torch.float64  # explicit dtypes: never change the global default (other test modules share it)



def rn(*shape):
    return torch.randn(*shape, dtype=D)


def _random_wf(n, d, h, form, jastrow=False, seed=0, train_variance=True):
    torch.manual_seed(seed)
    wf = RBMWaveFunction(n, d, h, form=form, init_std=0.4, train_variance=train_variance, jastrow=jastrow)
    with torch.no_grad():  # non-trivial, unequal variances
        wf.rbm.log_variance.copy_(torch.log(0.3 + torch.rand(n * d, dtype=D)))
        if jastrow:
            wf.jastrow.log_beta.fill_(math.log(0.7))
    return wf


@pytest.mark.parametrize("form", ["sqrt", "amplitude"])
def test_log_psi_reuses_grbm_free_energy(form):
    wf = _random_wf(2, 2, 3, form)
    assert isinstance(wf.rbm, GRBM)
    x = rn(7, 4)
    c = 0.5 if form == "sqrt" else 1.0
    torch.testing.assert_close(wf.log_psi(x), -c * wf.rbm.free_energy(x), rtol=0, atol=1e-12)
    # and the free energy is the formula of docs/maths.md, 'Gaussian visible units'
    r = wf.rbm
    s2 = r.log_variance.exp()
    F = ((x - r.visible_bias) ** 2 / (2 * s2)).sum(-1) - torch.nn.functional.softplus(
        r.hidden_bias + (x / s2) @ r.weight
    ).sum(-1)
    torch.testing.assert_close(wf.log_psi(x), -c * F, rtol=0, atol=1e-12)


@pytest.mark.parametrize("form", ["sqrt", "amplitude"])
@pytest.mark.parametrize("n,d,omega", [(1, 1, 1.0), (2, 2, 1.0), (3, 3, 0.5), (2, 2, 2.7)])
@pytest.mark.parametrize("method", ["analytic", "autograd"])
def test_local_energy_of_exact_gaussian_is_constant(form, n, d, omega, method):
    """W = 0, mu = 0 and the default s^2 give the exact orbital: E_L = N d omega / 2 everywhere."""
    wf = RBMWaveFunction(n, d, 3, form=form, omega=omega, init_std=0.0)
    ham = HarmonicTrap(n, d, omega)
    x = 3.0 * rn(50, n * d)
    e = local_energy(ham, wf, x, method)
    torch.testing.assert_close(e, torch.full_like(e, n * d * omega / 2), rtol=0, atol=1e-10)
    assert ham.exact_energy == pytest.approx(n * d * omega / 2)


def test_local_energy_of_wrong_width_is_not_constant():
    wf = RBMWaveFunction(2, 2, 3, sigma2=0.8, init_std=0.0)
    e = local_energy(HarmonicTrap(2, 2, 1.0), wf, rn(50, 4))
    assert e.std() > 0.1


def test_taut_exact_state_has_constant_local_energy_3():
    """Two electrons in 2D, omega = 1: Psi = (1 + r12) exp(-(r1^2 + r2^2)/2), E = 3 (Taut 1993)."""

    def log_psi(x):
        r12 = (x[:, 0:2] - x[:, 2:4]).norm(dim=-1)
        return torch.log1p(r12) - 0.5 * (x * x).sum(-1)

    ham = HarmonicTrap(2, 2, 1.0, interaction=True)
    x = rn(100, 4)
    e = local_energy(ham, log_psi, x, "autograd")
    torch.testing.assert_close(e, torch.full_like(e, 3.0), rtol=0, atol=1e-10)
    assert ham.exact_energy == 3.0


def test_taut_one_body_density_is_normalised_and_exact_at_origin():
    import numpy as np
    from scipy import integrate

    r = np.linspace(0.0, 6.0, 121)
    rho = taut_one_body_density(r)
    assert integrate.simpson(rho * 2 * np.pi * r, x=r) == pytest.approx(2.0, abs=1e-5)
    # at r = 0 the inner integral is radial: 2 pi int (1 + s)^2 exp(-s^2) s ds
    inner0 = 2 * np.pi * integrate.quad(lambda s: (1 + s) ** 2 * np.exp(-s * s) * s, 0, np.inf)[0]
    assert rho[0] == pytest.approx(2 * inner0 / (np.pi**2 * (3 + np.sqrt(2 * np.pi))), rel=1e-8)


@pytest.mark.parametrize("form", ["sqrt", "amplitude"])
@pytest.mark.parametrize("jastrow", [False, True])
def test_autograd_laplacian_matches_analytic(form, jastrow):
    wf = _random_wf(3, 2, 5, form, jastrow=jastrow, seed=1)
    x = 1.5 * rn(40, 6)
    g_a, l_a = wf.derivatives(x)
    g_t, l_t = autograd_derivatives(wf.log_psi, x)
    torch.testing.assert_close(g_a, g_t, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(l_a, l_t, rtol=1e-10, atol=1e-10)
    ham = HarmonicTrap(3, 2, 1.3, interaction=True)
    torch.testing.assert_close(
        local_energy(ham, wf, x, "analytic"), local_energy(ham, wf, x, "autograd"), rtol=1e-10, atol=1e-10
    )


def test_gradient_matches_finite_differences_in_x():
    wf = _random_wf(2, 3, 4, "sqrt", jastrow=True, seed=2)
    x = rn(5, 6)
    g, lap = wf.derivatives(x)
    h = 1e-5
    for k in range(6):
        e = torch.zeros(6, dtype=D)
        e[k] = h
        fd = (wf.log_psi(x + e) - wf.log_psi(x - e)) / (2 * h)
        torch.testing.assert_close(g[:, k], fd, rtol=1e-7, atol=1e-8)
    # Laplacian by second differences
    fd2 = sum(
        (wf.log_psi(x + h2) - 2 * wf.log_psi(x) + wf.log_psi(x - h2)) / 1e-6
        for h2 in (torch.eye(6, dtype=D)[k] * 1e-3 for k in range(6))
    )
    torch.testing.assert_close(lap, fd2, rtol=1e-4, atol=1e-5)


def test_jastrow_cusp_default_and_errors():
    assert PadeJastrow(2, 2).a == 1.0
    assert PadeJastrow(2, 3).a == 0.5
    with pytest.raises(ValueError, match="jastrow_a"):
        PadeJastrow(2, 1)
    with pytest.raises(ValueError, match="n_particles >= 2"):
        PadeJastrow(1, 2)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="form"):
        RBMWaveFunction(2, 2, 3, form="psi")
    wf = RBMWaveFunction(2, 2, 3)
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        wf.log_psi(rn(5, 3))
    with pytest.raises(ValueError, match="omega"):
        HarmonicTrap(2, 2, omega=0.0)
    with pytest.raises(TypeError, match="autograd"):
        local_energy(HarmonicTrap(1, 1), lambda x: -x.pow(2).sum(-1), rn(3, 1), "analytic")


def test_frozen_variance_is_not_trained():
    wf = RBMWaveFunction(2, 2, 3)
    assert not wf.rbm.log_variance.requires_grad
    torch.testing.assert_close(wf.rbm.log_variance.exp(), torch.full((4,), 0.5, dtype=D))
    wf = RBMWaveFunction(2, 2, 3, form="amplitude", omega=2.0, train_variance=True)
    assert wf.rbm.log_variance.requires_grad
    torch.testing.assert_close(wf.rbm.log_variance.exp(), torch.full((4,), 0.5, dtype=D))
