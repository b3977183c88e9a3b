"""Neural-network quantum states built on the Gaussian-binary RBM (GRBM).

The visible vector of the GRBM is the flattened particle coordinates
``x = (x_1, ..., x_N) in R^(N d)`` (particle ``p`` occupies ``x[p*d:(p+1)*d]``).
The GRBM marginal is (see docs/maths.md, 'Gaussian visible units', and the RBM/NQS lecture)

    P(x) = exp(-F(x)) / Z,
    F(x) = sum_i (x_i - mu_i)^2 / (2 s_i^2) - sum_j softplus(phi_j),
    phi  = b + W^T (x / s^2),

and the trial wave function is one of

* ``form="sqrt"`` (default, the lecture's NQS):  |Psi(x)|^2 = P(x), i.e.
  ``log Psi = -F(x) / 2``.  The Gaussian part is then exp(-(x-mu)^2 / (4 s^2)),
  so the exact harmonic-oscillator orbital exp(-omega x^2 / 2) has s^2 = 1/(2 omega).
  Only for this form is block Gibbs sampling of the GRBM an exact sampler of |Psi|^2.
* ``form="amplitude"`` (the course's alternative): Psi(x) = P(x), i.e.
  ``log Psi = -F(x)``; the exact orbital then has s^2 = 1/omega (s = 1 at omega = 1,
  the value the course fixes).

The wave function is real and positive (no sign structure, no antisymmetrisation):
exact for the spin-singlet ground state of two electrons (symmetric spatial part)
and for bosons; for N > 2 electrons it describes the bosonic ground state.

Optionally the RBM amplitude is multiplied by a Pade-Jastrow factor

    J(x) = exp( sum_{i<j} a r_ij / (1 + beta r_ij) ),

with ``a`` fixed by the electron-electron cusp condition (a = 1/(d-1) for
antiparallel spins, 1 in d = 2) and ``beta > 0`` trained (stored as log beta).

Derivatives with respect to x are available two ways that tests compare:
analytic (closed forms below) and autograd (``torch.func``: ``grad`` and ``jacfwd``
of the per-sample log amplitude, the exact Hessian trace).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

__all__ = ["PadeJastrow", "RBMWaveFunction", "autograd_derivatives"]


def _pair_indices(n_particles: int) -> tuple[Tensor, Tensor]:
    i, j = torch.triu_indices(n_particles, n_particles, offset=1)
    return i, j


class PadeJastrow(nn.Module):
    """Pade-Jastrow correlation factor ``log J = sum_{i<j} a r_ij / (1 + beta r_ij)``.

    ``a`` is a fixed cusp parameter (``1/(dim-1)`` by default: Kato's cusp for two
    electrons with antiparallel spins); ``beta = exp(log_beta)`` is trained.

    Derivatives (u(r) = a r / (1 + beta r)):
    ``u'(r) = a / (1 + beta r)^2``, ``u''(r) = -2 a beta / (1 + beta r)^3``,
    ``grad_i log J = sum_{j != i} u'(r_ij) (x_i - x_j) / r_ij``,
    ``lap_i log J = sum_{j != i} [u''(r_ij) + (d - 1) u'(r_ij) / r_ij]``.
    """

    def __init__(self, n_particles: int, dim: int, a: Optional[float] = None, beta: float = 1.0):
        super().__init__()
        if n_particles < 2:
            raise ValueError("PadeJastrow needs n_particles >= 2 (it correlates pairs); set jastrow=False.")
        if a is None:
            if dim < 2:
                raise ValueError("The cusp value a = 1/(dim-1) is undefined for dim = 1; pass jastrow_a explicitly.")
            a = 1.0 / (dim - 1)
        if beta <= 0:
            raise ValueError(f"jastrow_beta must be > 0, got {beta}.")
        self.n_particles, self.dim, self.a = n_particles, dim, float(a)
        self.log_beta = nn.Parameter(torch.tensor(math.log(beta)))
        i, j = _pair_indices(n_particles)
        self.register_buffer("pair_i", i, persistent=False)
        self.register_buffer("pair_j", j, persistent=False)

    @property
    def beta(self) -> Tensor:
        return self.log_beta.exp()

    def _pairs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pos = x.reshape(x.shape[0], self.n_particles, self.dim)
        diff = pos[:, self.pair_i, :] - pos[:, self.pair_j, :]  # [B, P, d]
        r = diff.norm(dim=-1)  # [B, P]
        return diff, r

    def forward(self, x: Tensor) -> Tensor:
        """log J(x) for a batch [B, N*d] -> [B]."""
        _, r = self._pairs(x)
        return (self.a * r / (1.0 + self.log_beta.exp() * r)).sum(-1)

    def derivatives(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Analytic (grad log J [B, N*d], laplacian of log J [B])."""
        diff, r = self._pairs(x)
        beta = self.log_beta.exp()
        den = 1.0 + beta * r
        du = self.a / den**2
        d2u = -2.0 * self.a * beta / den**3
        unit = diff / r.unsqueeze(-1)  # (x_i - x_j)/r_ij
        g_pair = du.unsqueeze(-1) * unit  # gradient w.r.t. particle i; particle j gets minus
        B = x.shape[0]
        grad = x.new_zeros(B, self.n_particles, self.dim)
        grad.index_add_(1, self.pair_i, g_pair)
        grad.index_add_(1, self.pair_j, -g_pair)
        # every pair contributes to both particles' Laplacians
        lap = 2.0 * (d2u + (self.dim - 1) * du / r).sum(-1)
        return grad.reshape(B, -1), lap


class RBMWaveFunction(nn.Module):
    """Trial wave function from a Gaussian-binary RBM, ``qidbm.models.GRBM``.

    Args:
        n_particles, dim: N particles in d dimensions; the GRBM has N*d visibles.
        n_hidden: number of binary hidden units.
        form: ``"sqrt"`` (|Psi|^2 = P, log Psi = -F/2) or ``"amplitude"`` (Psi = P, log Psi = -F).
        sigma2: initial (or fixed) visible variance s^2.  ``None`` picks the value that
            makes the bare Gaussian the exact oscillator orbital: 1/(2 omega) for
            ``"sqrt"``, 1/omega for ``"amplitude"``.
        omega: trap frequency, only used for the default ``sigma2``.
        train_variance: train ``log_variance`` (default ``False``: s^2 is frozen, as in
            the lecture's course where sigma = 1 is fixed).
        init_std: standard deviation of the random initial weights and biases
            (mu, b, W all ~ N(0, init_std^2)); fixed here so runs do not depend on the
            GRBM's own default initialisation.
        jastrow: multiply by a Pade-Jastrow factor (:class:`PadeJastrow`).
        jastrow_a, jastrow_beta: its cusp parameter (fixed) and initial beta (trained).
        gaussian_only: freeze W = 0 and b = 0, leaving the bare Gaussian
            exp(-c (x-mu)^2 / (2 s^2)) (a baseline without the hidden units' correlations,
            e.g. to compare "Gaussian x Jastrow" with "RBM x Jastrow").
        rbm: an existing GRBM-like module to wrap (must expose ``weight``,
            ``visible_bias``, ``hidden_bias``, ``log_variance`` and ``free_energy``);
            by default a new ``qidbm.models.GRBM(N*d, n_hidden)``.
        dtype: parameter dtype (float64 by default: local energies are differences of
            O(1) terms and the zero-variance limit is checked to ~1e-10).
    """

    FORMS = ("sqrt", "amplitude")

    def __init__(
        self,
        n_particles: int,
        dim: int,
        n_hidden: int,
        form: str = "sqrt",
        sigma2: Optional[float] = None,
        omega: float = 1.0,
        train_variance: bool = False,
        init_std: float = 0.01,
        jastrow: bool = False,
        jastrow_a: Optional[float] = None,
        jastrow_beta: float = 1.0,
        gaussian_only: bool = False,
        rbm: Optional[nn.Module] = None,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__()
        if n_particles < 1 or dim < 1:
            raise ValueError(f"n_particles and dim must be >= 1, got {n_particles}, {dim}.")
        if n_hidden < 1:
            raise ValueError(f"n_hidden must be >= 1, got {n_hidden}.")
        if form not in self.FORMS:
            raise ValueError(f"form must be one of {self.FORMS}, got {form!r}.")
        if omega <= 0:
            raise ValueError(f"omega must be > 0, got {omega}.")
        self.n_particles, self.dim, self.n_hidden, self.form = n_particles, dim, n_hidden, form
        self.n_visible = n_particles * dim
        # log Psi = -c F: c = 1/2 for |Psi|^2 = P, c = 1 for Psi = P
        self.c = 0.5 if form == "sqrt" else 1.0
        if sigma2 is None:
            sigma2 = 1.0 / (2.0 * omega) if form == "sqrt" else 1.0 / omega
        if sigma2 <= 0:
            raise ValueError(f"sigma2 must be > 0, got {sigma2}.")
        if rbm is None:
            from qidbm.models import GRBM

            rbm = GRBM(self.n_visible, n_hidden)
        for name in ("weight", "visible_bias", "hidden_bias", "log_variance"):
            if not hasattr(rbm, name):
                raise TypeError(f"rbm must expose GRBM parameter {name!r} (qidbm.models.GRBM does).")
        if tuple(rbm.weight.shape) != (self.n_visible, n_hidden):
            raise ValueError(
                f"rbm.weight has shape {tuple(rbm.weight.shape)}, expected (n_particles*dim, n_hidden) = "
                f"{(self.n_visible, n_hidden)}."
            )
        self.rbm = rbm.to(dtype)
        with torch.no_grad():
            self.rbm.weight.normal_(0.0, init_std)
            self.rbm.visible_bias.normal_(0.0, init_std)
            self.rbm.hidden_bias.normal_(0.0, init_std)
            self.rbm.log_variance.fill_(math.log(sigma2))
        self.rbm.log_variance.requires_grad_(train_variance)
        if gaussian_only:
            with torch.no_grad():
                self.rbm.weight.zero_()
                self.rbm.hidden_bias.zero_()
            self.rbm.weight.requires_grad_(False)
            self.rbm.hidden_bias.requires_grad_(False)
        self.gaussian_only = gaussian_only
        self.train_variance = train_variance
        self.jastrow = PadeJastrow(n_particles, dim, jastrow_a, jastrow_beta).to(dtype) if jastrow else None

    # ------------------------------------------------------------------ values
    def _check(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[-1] != self.n_visible:
            raise ValueError(
                f"positions must have shape [batch, n_particles*dim] = [B, {self.n_visible}], got {tuple(x.shape)}."
            )
        return x

    def log_psi(self, x: Tensor) -> Tensor:
        """log Psi(x) = -c F(x) [+ log J(x)] for a batch [B, N*d] -> [B] (c = 1/2 or 1)."""
        self._check(x)
        out = -self.c * self.rbm.free_energy(x)
        if self.jastrow is not None:
            out = out + self.jastrow(x)
        return out

    forward = log_psi

    def log_prob(self, x: Tensor) -> Tensor:
        """Unnormalised log |Psi(x)|^2 = 2 log Psi(x)."""
        return 2.0 * self.log_psi(x)

    # ------------------------------------------------- analytic x-derivatives
    def derivatives(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Analytic ``(grad_x log Psi [B, N*d], lap_x log Psi [B])``.

        With log P = -(x-mu)^2/(2 s^2) + sum_j softplus(phi_j), phi = b + W^T (x/s^2):
        ``d_k log P = (-(x_k - mu_k) + sum_j W_kj sigmoid(phi_j)) / s_k^2``,
        ``d_k^2 log P = -1/s_k^2 + sum_j W_kj^2 sigmoid(phi_j) (1 - sigmoid(phi_j)) / s_k^4``,
        and log Psi = c log P (+ log J).
        """
        self._check(x)
        rbm = self.rbm
        inv_s2 = torch.exp(-rbm.log_variance)
        phi = rbm.hidden_bias + (x * inv_s2) @ rbm.weight
        sig = torch.sigmoid(phi)
        grad = (rbm.visible_bias - x + sig @ rbm.weight.T) * inv_s2
        lap = -inv_s2.sum() + ((sig * (1.0 - sig)) @ (rbm.weight**2).T * inv_s2**2).sum(-1)
        grad, lap = self.c * grad, self.c * lap
        if self.jastrow is not None:
            gj, lj = self.jastrow.derivatives(x)
            grad, lap = grad + gj, lap + lj
        return grad, lap

    def grad_log_psi(self, x: Tensor) -> Tensor:
        """grad_x log Psi(x) [B, N*d]; the quantum force is 2 grad_x log Psi."""
        return self.derivatives(x)[0]


def autograd_derivatives(log_psi: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """Exact ``(grad log Psi, lap log Psi)`` of any batched log amplitude by ``torch.func``.

    ``log_psi`` maps [B, n] -> [B]; per sample we take ``g = grad(log_psi)`` and the
    trace of its forward-mode Jacobian (the Hessian), vectorised with ``vmap``.
    """

    def single(xs: Tensor) -> Tensor:
        return log_psi(xs.unsqueeze(0)).squeeze(0)

    g = torch.func.grad(single)

    def both(xs: Tensor) -> tuple[Tensor, Tensor]:
        return g(xs), torch.func.jacfwd(g)(xs).diagonal().sum()

    return torch.func.vmap(both)(x)
