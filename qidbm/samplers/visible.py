"""Moves of a Gaussian visible layer given the hidden layers (docs/maths.md, 'Samplers').

``p(v | h) = N(mean, s^2)`` with ``mean = mu + W h`` (the model's conditional). A kernel holds one
of these objects and calls ``move(model, v, mean, generator)`` for layer 0 of a Gaussian machine:

* :class:`GaussianGibbs`: an exact draw from ``N(mean, s^2)``;
* :class:`LangevinVisible`: Langevin steps on ``-log p(v | h)`` from the current v (Liao et al.
  2022's Gibbs-Langevin); with ``adjust`` each step is Metropolis-adjusted (MALA), so the kernel
  stays exact.
"""

from __future__ import annotations

import torch
from torch import Tensor


class GaussianGibbs:
    """Draw v from its Gaussian conditional ``N(mean, s^2)``."""

    exact_proposal = True  # a draw from the conditional: the exact quantum step may propose with it

    def move(self, model, v: Tensor, mean: Tensor, generator: torch.Generator | None) -> Tensor:
        std = model.visible_std
        return mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)

    def __repr__(self) -> str:
        return "GaussianGibbs()"


class LangevinVisible:
    """``steps`` Langevin moves of step ``step_size * mean(s^2)`` on ``log p(v | h) = -(v - mean)^2 / 2 s^2``,
    each Metropolis-adjusted when ``adjust``."""

    exact_proposal = False

    def __init__(self, steps: int = 10, step_size: float = 0.1, adjust: bool = True) -> None:
        if steps < 1 or step_size <= 0:
            raise ValueError("langevin_steps must be >= 1 and langevin_step_size > 0")
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.adjust = bool(adjust)

    def __repr__(self) -> str:
        return f"LangevinVisible(steps={self.steps}, step_size={self.step_size}, adjust={self.adjust})"

    def move(self, model, v: Tensor, mean: Tensor, generator: torch.Generator | None) -> Tensor:
        var = torch.exp(model.log_variance)
        eta = self.step_size * var.mean()
        for _ in range(self.steps):
            grad = -(v - mean) / var
            noise = torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
            prop = v + eta * grad + torch.sqrt(2 * eta) * noise
            if self.adjust:
                grad_p = -(prop - mean) / var
                log_t = lambda x: -(((x - mean) ** 2) / (2 * var)).sum(-1)  # noqa: E731
                log_q_fwd = -((prop - v - eta * grad) ** 2).sum(-1) / (4 * eta)
                log_q_bwd = -((v - prop - eta * grad_p) ** 2).sum(-1) / (4 * eta)
                log_alpha = log_t(prop) - log_t(v) + log_q_bwd - log_q_fwd
                u = torch.rand(log_alpha.shape, generator=generator, device=v.device, dtype=v.dtype)
                acc = torch.log(u) < log_alpha
                v = torch.where(acc[:, None], prop, v)
            else:
                v = prop
        return v
