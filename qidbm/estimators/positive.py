"""Positive-phase estimators: the E-step that fills a DBM's classical hidden layers given the data.

For machines whose hidden layers are all summed out in the loss (RBM, QRBM, GRBM, QGRBM, and the odd
layers of a DBM) the E-step is exact and needs nothing; these estimators fill the rest:

* :class:`ClampedGibbs`: a Gibbs chain with the visible layer clamped at the data, started at a
  short mean-field pass (the DO-EM paper's E-step for classical layers);
* :class:`MeanField`: the mean-field fixed point itself (Salakhutdinov and Hinton 2009);
* :class:`ClampedLocalMode`: Taniguchi et al.'s clamped chain (noise, local search, one sweep,
  coupling; :mod:`qidbm.samplers.taniguchi`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from qidbm.estimators.base import PositivePhase
from qidbm.models.base import BoltzmannMachine, State
from qidbm.samplers.chain import bernoulli
from qidbm.samplers.kernels import BlockGibbsKernel

__all__ = ["ClampedGibbs", "ClampedLocalMode", "MeanField"]


def _check_steps(name: str, steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{name} needs an integer number of steps >= 1 (e.g. 5), got {steps!r}")


class ClampedGibbs(PositivePhase):
    """``steps`` block Gibbs sweeps with the visible layer clamped at the data, started at two
    mean-field iterations (which only initialise the chain)."""

    def __init__(self, steps: int = 5) -> None:
        _check_steps("ClampedGibbs", steps)
        self.steps = steps

    @torch.no_grad()
    def __call__(self, model: BoltzmannMachine, v: Tensor, kernel: BlockGibbsKernel, generator) -> State:
        mf = model.mean_field(v, num_iters=2)
        state = [v] + [bernoulli(p, generator) for p in mf[1:]]
        return kernel.run(model, state, self.steps, clamped=(0,), generator=generator)[0]


class MeanField(PositivePhase):
    """The mean-field fixed point ``mu = E[x_l | mu_{l-1}, mu_{l+1}]`` given the data, ``steps``
    iterations (docs/maths.md, 'Mean field')."""

    def __init__(self, steps: int = 10) -> None:
        _check_steps("MeanField", steps)
        self.steps = steps

    @torch.no_grad()
    def __call__(self, model: BoltzmannMachine, v: Tensor, kernel: BlockGibbsKernel, generator) -> State:
        return model.mean_field(v, num_iters=self.steps)


class ClampedLocalMode(PositivePhase):
    """Taniguchi et al.'s positive chain: hidden noise, local search to a mode, one Gibbs sweep in a
    random block order, then their coupling steps (:func:`qidbm.samplers.taniguchi.taniguchi_chain`)."""

    def __init__(self) -> None:
        pass

    @torch.no_grad()
    def __call__(self, model: BoltzmannMachine, v: Tensor, kernel: BlockGibbsKernel, generator) -> State:
        from qidbm.samplers.taniguchi import taniguchi_chain

        return taniguchi_chain(model, v, v.shape[0], kernel, generator)[0]
