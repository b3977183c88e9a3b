"""Hamiltonians and local energies for particles in a harmonic trap (quantum dots).

Dimensionless units (hbar = m = 1):

    H = sum_i [ -1/2 nabla_i^2 + 1/2 omega^2 r_i^2 ] + lambda * sum_{i<j} 1 / r_ij,

with lambda = 1 (``interaction=True``, the quantum-dot Hamiltonian of the lecture) or 0.
The local energy of a real trial state with log amplitude L = log Psi is

    E_L(x) = (H Psi)(x) / Psi(x) = -1/2 sum_k [ d_k^2 L + (d_k L)^2 ] + V(x).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from .wavefunction import autograd_derivatives

__all__ = ["HarmonicTrap", "local_energy", "local_energy_samples", "taut_one_body_density"]


class HarmonicTrap:
    """N particles in an isotropic d-dimensional harmonic trap, optionally Coulomb-repelling.

    Args:
        n_particles, dim: N and d.
        omega: trap frequency (> 0).
        interaction: add sum_{i<j} 1/r_ij.
    """

    def __init__(self, n_particles: int, dim: int, omega: float = 1.0, interaction: bool = False):
        if n_particles < 1 or dim < 1:
            raise ValueError(f"n_particles and dim must be >= 1, got {n_particles}, {dim}.")
        if omega <= 0:
            raise ValueError(f"omega must be > 0, got {omega}.")
        self.n_particles, self.dim, self.omega, self.interaction = n_particles, dim, float(omega), interaction
        self._i, self._j = torch.triu_indices(n_particles, n_particles, offset=1)

    def potential(self, x: Tensor) -> Tensor:
        """V(x) = 1/2 omega^2 sum_i r_i^2 (+ sum_{i<j} 1/r_ij) for [B, N*d] -> [B]."""
        v = 0.5 * self.omega**2 * (x * x).sum(-1)
        if self.interaction and self.n_particles > 1:
            pos = x.reshape(x.shape[0], self.n_particles, self.dim)
            r = (pos[:, self._i.to(x.device)] - pos[:, self._j.to(x.device)]).norm(dim=-1)
            v = v + (1.0 / r).sum(-1)
        return v

    def local_energy_from_derivatives(self, x: Tensor, grad: Tensor, lap: Tensor) -> Tensor:
        """E_L = -1/2 (lap log Psi + |grad log Psi|^2) + V(x)."""
        return -0.5 * (lap + (grad * grad).sum(-1)) + self.potential(x)

    @property
    def exact_energy(self) -> Optional[float]:
        """Known exact ground-state energy, or None.

        Non-interacting (bosonic / distinguishable ground state, all particles in the
        lowest orbital): N d omega / 2.  Two interacting electrons (Taut 1993/1994):
        3.0 for d = 2, omega = 1 and 2.0 for d = 3, omega = 1/2.
        """
        if not self.interaction or self.n_particles == 1:
            return self.n_particles * self.dim * self.omega / 2.0
        if self.n_particles == 2 and self.dim == 2 and self.omega == 1.0:
            return 3.0
        if self.n_particles == 2 and self.dim == 3 and self.omega == 0.5:
            return 2.0
        return None

    def __repr__(self) -> str:
        return (
            f"HarmonicTrap(n_particles={self.n_particles}, dim={self.dim}, omega={self.omega}, "
            f"interaction={self.interaction})"
        )


def local_energy(
    hamiltonian: HarmonicTrap,
    log_psi: Callable[[Tensor], Tensor],
    x: Tensor,
    method: str = "analytic",
) -> Tensor:
    """Local energy E_L(x) [B] of a batch of positions [B, N*d].

    ``method="analytic"`` needs ``log_psi`` to be an :class:`RBMWaveFunction` (its
    closed-form ``derivatives``); ``"autograd"`` works for any batched log amplitude
    (``torch.func`` gradient and exact Hessian trace).
    """
    if method == "analytic":
        if not hasattr(log_psi, "derivatives"):
            raise TypeError("method='analytic' needs a wave function with .derivatives(x); use method='autograd'.")
        grad, lap = log_psi.derivatives(x)
    elif method == "autograd":
        grad, lap = autograd_derivatives(log_psi, x)
    else:
        raise ValueError(f"method must be 'analytic' or 'autograd', got {method!r}.")
    return hamiltonian.local_energy_from_derivatives(x, grad, lap)


def local_energy_samples(
    hamiltonian: HarmonicTrap,
    log_psi: Callable[[Tensor], Tensor],
    x: Tensor,
    method: str = "analytic",
) -> Tensor:
    """:func:`local_energy` of Monte Carlo samples as plain data (no autograd graph kept).

    What the VMC training step and the final evaluation average: ``"analytic"`` runs under
    ``torch.no_grad``, ``"autograd"`` with gradients enabled (``torch.func`` needs them).
    """
    with torch.no_grad() if method == "analytic" else torch.enable_grad():
        e = local_energy(hamiltonian, log_psi, x, method)
    return e.detach()


def taut_one_body_density(r, n_theta: int = 128, n_rho: int = 2000, rho_max: float = 6.5) -> np.ndarray:
    """Exact radial one-body density of two electrons in 2D at omega = 1 (Taut 1993).

    The exact ground state is Psi = (1 + r12) exp(-(r1^2 + r2^2) / 2) (E = 3), so
    ``rho(r) = 2 exp(-r^2) I(r) / Z`` with ``I(r) = int (1 + |r_vec - r2|)^2 exp(-r2^2) d^2 r2
    = pi (2 + r^2) + 2 int |r_vec - r2| exp(-r2^2) d^2 r2`` (the last term numerically:
    trapezoid rule in angle and radius) and ``Z = pi^2 (3 + sqrt(2 pi))`` (relative and
    centre-of-mass coordinates), normalised so that ``int rho d^2 r = 2``.
    """
    r = np.atleast_1d(np.asarray(r, dtype=np.float64))
    th = np.linspace(0.0, 2 * np.pi, n_theta, endpoint=False)
    rho = np.linspace(0.0, rho_max, n_rho)
    weight = np.exp(-(rho**2)) * rho
    lin = np.empty_like(r)
    for start in range(0, r.size, 16):  # chunks bound the [r, rho, theta] temporary
        rr = r[start : start + 16, None, None]
        d = np.sqrt(np.maximum(rr**2 + rho[:, None] ** 2 - 2 * rr * rho[:, None] * np.cos(th), 0.0))
        lin[start : start + 16] = np.trapezoid(d.mean(-1) * 2 * np.pi * weight, rho, axis=-1)
    inner = np.pi * (2 + r**2) + 2 * lin
    Z = np.pi**2 * (3 + np.sqrt(2 * np.pi))
    return 2.0 * np.exp(-(r**2)) * inner / Z
