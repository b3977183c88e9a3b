"""Markov-chain samplers of |Psi(x)|^2 for a batch of independent chains.

Samplers are separate objects (NetKet style): they see a wave function only through
``log_prob(x) = log |Psi(x)|^2`` (and ``grad_log_psi`` for the drift), act on a batch of
chains ``x`` [C, N*d] in place of a Python loop over chains, and are stateless
(the chain positions are the caller's state, e.g. a buffer of the Lightning module).

One ``sweep`` is
* Metropolis / Metropolis-Hastings: N single-particle moves, particle 0, 1, ..., N-1 in
  turn; each move satisfies detailed balance w.r.t. |Psi|^2, so the sweep leaves it invariant.
* Gibbs: one block Gibbs step x -> h -> x of the GRBM (|Psi|^2 = P only).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from qidbm.progress import tqdm_kwargs

__all__ = [
    "Sampler",
    "MetropolisSampler",
    "MetropolisHastingsSampler",
    "GibbsSampler",
    "make_sampler",
    "sample_chains",
]


class Sampler:
    """Base class: ``sweep(wf, x) -> (x_new, acceptance [C])``."""

    name = "base"

    def __init__(self, generator: Optional[torch.Generator] = None):
        self.generator = generator

    def check(self, wf) -> None:
        """Raise if this sampler cannot sample ``wf`` exactly."""

    def sweep(self, wf, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _rand(self, shape, like: Tensor) -> Tensor:
        return torch.rand(shape, generator=self.generator, dtype=like.dtype, device=like.device)

    def _randn(self, shape, like: Tensor) -> Tensor:
        return torch.randn(shape, generator=self.generator, dtype=like.dtype, device=like.device)


class MetropolisSampler(Sampler):
    """Brute-force Metropolis with uniform single-particle moves.

    Proposal ``x_p' = x_p + step_size * (u - 1/2)``, u ~ U[0,1)^d (symmetric), accepted with
    probability ``min(1, |Psi(x')|^2 / |Psi(x)|^2)``.
    """

    name = "metropolis"

    def __init__(self, step_size: float = 1.0, generator: Optional[torch.Generator] = None):
        super().__init__(generator)
        if step_size <= 0:
            raise ValueError(f"step_size must be > 0, got {step_size}.")
        self.step_size = float(step_size)

    @torch.no_grad()
    def sweep(self, wf, x: Tensor) -> tuple[Tensor, Tensor]:
        n, d = wf.n_particles, wf.dim
        lp = wf.log_prob(x)
        acc_total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for p in range(n):
            sl = slice(p * d, (p + 1) * d)
            xn = x.clone()
            xn[:, sl] += self.step_size * (self._rand((x.shape[0], d), x) - 0.5)
            lpn = wf.log_prob(xn)
            acc = torch.log(self._rand((x.shape[0],), x)) < lpn - lp
            x = torch.where(acc.unsqueeze(-1), xn, x)
            lp = torch.where(acc, lpn, lp)
            acc_total += acc.to(x.dtype)
        return x, acc_total / n


class MetropolisHastingsSampler(Sampler):
    """Importance sampling: Langevin proposals with the quantum-force drift.

    With diffusion constant D = 1/2 and quantum force F = 2 grad log Psi, a move of
    particle p is ``x_p' = x_p + D F_p(x) dt + sqrt(dt) xi``, xi ~ N(0, I_d), and is accepted
    with probability ``min(1, |Psi(x')|^2 G(x | x') / (|Psi(x)|^2 G(x' | x)))``, where
    ``G(y | x) = exp(-|y_p - x_p - D dt F_p(x)|^2 / (4 D dt))`` is the Fokker-Planck
    Green's function.
    """

    name = "importance"

    def __init__(self, time_step: float = 0.05, generator: Optional[torch.Generator] = None):
        super().__init__(generator)
        if time_step <= 0:
            raise ValueError(f"time_step must be > 0, got {time_step}.")
        self.time_step = float(time_step)

    @torch.no_grad()
    def sweep(self, wf, x: Tensor) -> tuple[Tensor, Tensor]:
        n, d, dt = wf.n_particles, wf.dim, self.time_step
        lp = wf.log_prob(x)
        g = wf.grad_log_psi(x)  # D F = grad log Psi
        acc_total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for p in range(n):
            sl = slice(p * d, (p + 1) * d)
            xn = x.clone()
            xn[:, sl] = x[:, sl] + dt * g[:, sl] + math.sqrt(dt) * self._randn((x.shape[0], d), x)
            lpn = wf.log_prob(xn)
            gn = wf.grad_log_psi(xn)
            fwd = ((xn[:, sl] - x[:, sl] - dt * g[:, sl]) ** 2).sum(-1)
            bwd = ((x[:, sl] - xn[:, sl] - dt * gn[:, sl]) ** 2).sum(-1)
            log_ratio = lpn - lp + (fwd - bwd) / (2.0 * dt)
            acc = torch.log(self._rand((x.shape[0],), x)) < log_ratio
            x = torch.where(acc.unsqueeze(-1), xn, x)
            lp = torch.where(acc, lpn, lp)
            g = torch.where(acc.unsqueeze(-1), gn, g)
            acc_total += acc.to(x.dtype)
        return x, acc_total / n


class GibbsSampler(Sampler):
    """Block Gibbs sampling of the GRBM joint P(x, h); its x-marginal is P(x) = |Psi|^2.

    ``p(h_j = 1 | x) = sigmoid(b_j + (W^T (x / s^2))_j)``, ``p(x | h) = N(mu + W h, diag(s^2))``.
    Exact only for ``form="sqrt"`` without a Jastrow factor; every step is accepted.
    """

    name = "gibbs"

    def check(self, wf) -> None:
        if getattr(wf, "form", None) != "sqrt" or getattr(wf, "jastrow", None) is not None:
            raise ValueError(
                "Gibbs sampling is exact only for |Psi|^2 = P(x) (form='sqrt') without a Jastrow factor; "
                "use sampler='metropolis' or 'importance' for this wave function."
            )

    @torch.no_grad()
    def sweep(self, wf, x: Tensor) -> tuple[Tensor, Tensor]:
        self.check(wf)
        rbm = wf.rbm
        s2 = rbm.log_variance.exp()
        phi = rbm.hidden_bias + (x / s2) @ rbm.weight
        h = torch.bernoulli(torch.sigmoid(phi), generator=self.generator)
        x = rbm.visible_bias + h @ rbm.weight.T + s2.sqrt() * self._randn(x.shape, x)
        return x, torch.ones(x.shape[0], dtype=x.dtype, device=x.device)


def make_sampler(
    name: str,
    step_size: float = 1.0,
    time_step: float = 0.05,
    generator: Optional[torch.Generator] = None,
) -> Sampler:
    """Sampler by name: ``"metropolis"``, ``"importance"`` (Metropolis-Hastings with drift) or ``"gibbs"``."""
    if name == "metropolis":
        return MetropolisSampler(step_size, generator)
    if name in ("importance", "metropolis_hastings"):
        return MetropolisHastingsSampler(time_step, generator)
    if name == "gibbs":
        return GibbsSampler(generator)
    raise ValueError(f"unknown sampler {name!r}; choose 'metropolis', 'importance' or 'gibbs'.")


def sample_chains(
    sampler: Sampler,
    wf,
    x: Tensor,
    n_samples: int,
    thin: int = 1,
    burn_in: int = 0,
    progress: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run C chains: ``burn_in`` sweeps, then ``n_samples`` samples ``thin`` sweeps apart.

    Returns ``(samples [n_samples, C, N*d], last x [C, N*d], mean acceptance [C])``.
    """
    if n_samples < 1 or thin < 1 or burn_in < 0:
        raise ValueError(f"need n_samples >= 1, thin >= 1, burn_in >= 0; got {n_samples}, {thin}, {burn_in}.")
    sampler.check(wf)
    for _ in tqdm(range(burn_in), desc="burn-in", disable=not progress, leave=False, **tqdm_kwargs()):
        x, _ = sampler.sweep(wf, x)
    out = x.new_empty((n_samples,) + tuple(x.shape))
    acc = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for t in tqdm(range(n_samples), desc="sampling", disable=not progress, leave=False, **tqdm_kwargs()):
        for _ in range(thin):
            x, a = sampler.sweep(wf, x)
            acc += a
        out[t] = x
    return out, x, acc / (n_samples * thin)
