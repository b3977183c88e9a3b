"""Centering (Montavon and Mueller 2012; Melchior, Fischer and Wiskott 2016) as a gradient transform.

A centered machine writes its energy with every layer shifted by an offset mu_l:

    E(x) = -sum_l (x_l - mu_l)^T b'_l - sum_k (x_k - mu_k)^T W_k (x_{k+1} - mu_{k+1}),

the same family of distributions as the plain machine (biases b_l = b'_l - W_{l-1}^T mu_{l-1} - W_l mu_{l+1}),
but gradient ascent in the centered coordinates is much better conditioned: DBMs train without
greedy pretraining and their samples and likelihoods improve (Melchior et al. 2016). This module
keeps the model's own parameters and turns the plain gradients into the centered update of them
(the "centered gradient"). With ``g_W_k`` and ``g_l`` the plain gradients of the weights and biases:

    G_k   = g_W_k - mu_k g_{k+1}^T - g_k mu_{k+1}^T                        (weights)
    G_b_l = g_l - G_{l-1}^T mu_{l-1} - G_l mu_{l+1}                         (biases)

G is exactly the change of the plain parameters that a gradient step in the centered coordinates
makes (at fixed offsets). The offsets follow the data: an exponential moving average of each
layer's mean under the positive phase, ``mu_l <- (1 - rate) mu_l + rate * mean_batch <x_l>_data``
(visible layer: the data mean; hidden layers start at 1/2). With all offsets 0 the transform is
the identity. Transverse-field parameters are left as they are: they enter no product with x.

Gaussian visible units (GRBM, QGRBM: ``E = sum (v - m)^2 / 2 s^2 - (v / s^2)^T W h - b.h``) enter
the products as ``x_0 = v / s^2`` and their bias gradient is the ``<x_0>`` difference, so the same
transform holds with the visible offset fixed at 0: only the hidden layer is centered. That is an
exact reparametrisation (``m = m' - W mu_1``, independent of ``s``), so learned variances keep
their plain gradient.

Implemented by :func:`centered_gradients`; tested against the centered parametrisation's own
autograd gradient in ``tests/lightning/test_centering.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qidbm.models.base import BoltzmannMachine


def initial_offsets(model: BoltzmannMachine, visible_mean: Tensor | None = None) -> list[Tensor]:
    """Offsets at the start of a fit: the visible data mean (or 1/2; 0 for Gaussian visible units,
    whose offset stays 0) and 1/2 for every hidden layer."""
    ref = model.layer_bias(0)
    offs = [torch.full((n,), 0.5, device=ref.device, dtype=ref.dtype) for n in model.layer_sizes]
    if model.gaussian_visible:
        offs[0].zero_()
    elif visible_mean is not None:
        offs[0] = visible_mean.to(device=ref.device, dtype=ref.dtype).clone()
    return offs


@torch.no_grad()
def centered_gradients(model: BoltzmannMachine, offsets: list[Tensor]) -> None:
    """Replace the ``.grad`` of ``model``'s weights and biases by the centered update (module docstring).

    Works on the gradients of any loss whose weight gradient is ``<x_k x_{k+1}^T>`` differences and
    whose bias gradient is ``<x_l>`` differences (the DO-EM / CD loss): the transform is linear, so
    the sign convention of the loss does not matter. For Gaussian visible units the visible offset
    is taken as 0 whatever ``offsets[0]`` holds.
    """
    if model.gaussian_visible:
        # hidden layers only (module docstring); no check of offsets[0] here: it would sync the device every step
        offsets = [torch.zeros_like(offsets[0])] + list(offsets[1:])
    L = model.num_layers
    weights = [model.layer_weight(k) for k in range(L - 1)]
    biases = [model.layer_bias(l) for l in range(L)]
    if len({id(w) for w in weights}) != len(weights) or len({id(b) for b in biases}) != len(biases):
        raise ValueError("centering needs one weight tensor per layer pair and one bias tensor per layer")
    gw = [torch.zeros_like(w) if w.grad is None else w.grad for w in weights]
    gb = [torch.zeros_like(b) if b.grad is None else b.grad for b in biases]
    new_w = [gw[k] - torch.outer(offsets[k], gb[k + 1]) - torch.outer(gb[k], offsets[k + 1]) for k in range(L - 1)]
    new_b = []
    for l in range(L):
        g = gb[l]
        if l > 0:
            g = g - new_w[l - 1].t() @ offsets[l - 1]
        if l + 1 < L:
            g = g - new_w[l] @ offsets[l + 1]
        new_b.append(g)
    for p, g in zip(weights + biases, new_w + new_b):
        if p.grad is None:
            p.grad = g
        else:
            p.grad.copy_(g)


@torch.no_grad()
def update_offsets(offsets: list[Tensor], batch_means: list[Tensor | None], rate: float) -> None:
    """``mu_l <- (1 - rate) mu_l + rate * batch_mean_l`` for every layer whose mean is given."""
    for mu, m in zip(offsets, batch_means):
        if m is not None:
            mu.lerp_(m.to(mu.dtype), rate)


class Centering:
    """Centered training (module docstring) as an object the training module composes: it keeps the
    offsets, records each step's positive-phase layer means and turns the plain gradients into the
    centered update before the optimizer step.

    ``rate``: the offsets follow the positive phase's layer means, ``mu <- (1 - rate) mu + rate mean``.
    The offsets are saved in checkpoints (``centering_offsets`` of the qidbm section).
    """

    def __init__(self, rate: float = 0.01) -> None:
        if not 0 < rate <= 1:
            raise ValueError(f"Centering: rate must be in (0, 1], got {rate}")
        self.rate = rate
        self.offsets: list[Tensor] | None = None
        self._means: list[Tensor] | None = None

    def __repr__(self) -> str:
        return f"Centering(rate={self.rate})"

    def start(self, model: BoltzmannMachine) -> None:
        """At the start of a fit: offsets from the data mean (after the visible biases were set from
        the data) unless restored from a checkpoint; on the model's device."""
        if self.offsets is None:
            self.offsets = initial_offsets(model, torch.sigmoid(model.layer_bias(0).detach()))
        ref = model.layer_bias(0)
        self.offsets = [o.to(ref.device, ref.dtype) for o in self.offsets]

    @torch.no_grad()
    def record(self, model: BoltzmannMachine, positive: list, fields: dict, num_positive: int) -> None:
        """Per-layer means of the positive phase (summed layers: their conditional means from the loss's
        ``fields``), averaged over DDP ranks so every rank transforms the reduced gradient alike."""
        from qidbm.quantum import qubit_draw_prob

        means = []
        for l in range(model.num_layers):
            if l in fields:
                phi, gam = fields[l]
                phi = phi[:num_positive]
                if gam is None:
                    p = torch.sigmoid(phi)
                else:
                    p = qubit_draw_prob(*torch.broadcast_tensors(phi, gam[:num_positive] if gam.dim() > 1 else gam))
                means.append(p.mean(0))
            elif l == 0 and model.gaussian_visible:
                means.append(torch.zeros_like(positive[0][0]))  # the visible offset of Gaussian units stays 0
            else:
                means.append(positive[l].mean(0))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flat = torch.cat(means)
            torch.distributed.all_reduce(flat)
            means = list((flat / torch.distributed.get_world_size()).split([m.numel() for m in means]))
        self._means = means

    def transform(self, model: BoltzmannMachine) -> None:
        """Before the optimizer step: the centered gradients, then the offsets follow the recorded means."""
        if self.offsets is None:
            return
        centered_gradients(model, self.offsets)
        if self._means is not None:
            update_offsets(self.offsets, self._means, self.rate)
            self._means = None
