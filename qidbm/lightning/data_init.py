"""Visible parameters set from the training data at the start of a new fit."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from qidbm.models.base import BoltzmannMachine

__all__ = ["DataInit", "as_visible"]


def as_visible(batch: Any) -> Tensor:
    """The ``[B, n_visible]`` tensor of a batch (a tensor, or a tuple whose first item is one)."""
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    if not isinstance(batch, Tensor):
        raise TypeError(f"expected a batch tensor [B, n_visible], got {type(batch).__name__}")
    return batch if batch.dim() == 2 else batch.flatten(1)


class DataInit:
    """Set the visible parameters from the first ``max_batches`` training batches: binary units get the
    biases ``logit(mean)`` (the marginals of an RBM with zero weights); Gaussian units the data mean and
    ``variance_scale`` times each pixel's variance, floored at the mean pixel variance (near-constant
    border pixels would otherwise start with precisions of ~100 and blow up the first steps). A scale
    ``c < 1`` gives sharper conditionals ``p(v | h)`` and a narrower noise start.
    """

    def __init__(self, variance_scale: float = 1.0, max_batches: int = 20) -> None:
        if not (variance_scale > 0 and math.isfinite(variance_scale)):
            raise ValueError(f"DataInit: variance_scale must be a positive number, got {variance_scale}")
        self.variance_scale, self.max_batches = float(variance_scale), int(max_batches)

    def __repr__(self) -> str:
        return f"DataInit(variance_scale={self.variance_scale}, max_batches={self.max_batches})"

    def check(self, model: BoltzmannMachine) -> None:
        """A clear error when this setting does not apply to ``model``."""
        if self.variance_scale != 1.0 and not model.gaussian_visible:
            raise ValueError("DataInit(variance_scale=...) scales the variances of Gaussian visible units: use it "
                             "with GRBM/QGRBM, or leave it at 1")

    @torch.no_grad()
    def __call__(self, model: BoltzmannMachine, batches) -> None:
        """Set ``model``'s visible parameters from ``batches`` (an iterable of training batches)."""
        self.check(model)
        xs = []
        for i, b in enumerate(batches):
            xs.append(as_visible(b))
            if i + 1 >= self.max_batches:
                break
        if not xs:
            return
        x = torch.cat(xs).to(torch.float64)
        if model.gaussian_visible:
            model.visible_bias.copy_(x.mean(0))
            var = x.var(0)
            var = var.clamp_min(max(float(var.mean()), 1e-6)) * self.variance_scale
            model.log_variance.copy_(torch.log(var))
        else:
            p = x.mean(0).clamp(1e-3, 1 - 1e-3)
            model.layer_bias(0).copy_(torch.log(p) - torch.log1p(-p))
