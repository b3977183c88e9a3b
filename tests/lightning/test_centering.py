"""Centered gradients equal a gradient step in the centered coordinates (exact, float64)."""

import pytest
import torch

from qidbm.lightning.centering import centered_gradients, initial_offsets, update_offsets
from qidbm.models import DBM, GRBM, QGRBM, QiDBM


def _loss(model, states_pos, states_neg):
    s = model.default_summed_layers()
    return model.marginal_free_energy(states_pos, s).mean() - model.marginal_free_energy(states_neg, s).mean()


def _states(model, n, g):
    states = [(torch.rand(n, k, generator=g, dtype=torch.float64) < 0.5).double() for k in model.layer_sizes]
    if model.gaussian_visible:
        states[0] = torch.randn(n, model.layer_sizes[0], generator=g, dtype=torch.float64) * 1.5 + 0.3
    return states


def _model(cls):
    if cls in (GRBM, QGRBM):
        return cls(5, 4).double()  # learned variances: their plain gradient is the centered one too
    return (cls([5, 4, 3]) if cls is DBM else cls([5, 4, 3], quantum_layers=[1])).double()


@pytest.mark.parametrize("cls", [DBM, QiDBM, GRBM, QGRBM])
def test_centered_gradient_is_step_in_centered_coordinates(cls):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = _model(cls)
    for p in model.parameters():
        p.data.normal_(0, 0.5, generator=g)
    L = model.num_layers
    mu = [torch.rand(n, generator=g, dtype=torch.float64) for n in model.layer_sizes]
    if model.gaussian_visible:
        mu[0].zero_()  # Gaussian visible units: hidden layers only
    other = {n: p for n, p in model.named_parameters()
             if not any(p is model.layer_weight(k) for k in range(L - 1)) and not any(p is model.layer_bias(l) for l in range(L))}
    pos, neg = _states(model, 7, g), _states(model, 9, g)

    # plain gradients, transformed
    model.zero_grad()
    _loss(model, pos, neg).backward()
    centered_gradients(model, mu)
    got_w = [model.layer_weight(k).grad.clone() for k in range(L - 1)]
    got_b = [model.layer_bias(l).grad.clone() for l in range(L)]
    got_other = {n: None if p.grad is None else p.grad.clone() for n, p in other.items()}

    # centered coordinates: W' = W, b'_l = b_l + W_l mu_{l+1} + W_{l-1}^T mu_{l-1}; autograd through the map back
    W = [model.layer_weight(k).detach().clone() for k in range(L - 1)]
    b = [model.layer_bias(l).detach().clone() for l in range(L)]
    Wc = [w.clone().requires_grad_() for w in W]
    bc = []
    for l in range(L):
        x = b[l].clone()
        if l + 1 < L:
            x = x + W[l] @ mu[l + 1]
        if l > 0:
            x = x + W[l - 1].t() @ mu[l - 1]
        bc.append(x.requires_grad_())
    plain_b = []
    for l in range(L):
        x = bc[l]
        if l + 1 < L:
            x = x - Wc[l] @ mu[l + 1]
        if l > 0:
            x = x - Wc[l - 1].t() @ mu[l - 1]
        plain_b.append(x)
    # rebuild the loss as a function of the centered coordinates
    params = dict(model.named_parameters())
    names_w = [n for n, p in params.items() if any(p is model.layer_weight(k) for k in range(L - 1))]
    names_b = [n for n, p in params.items() if any(p is model.layer_bias(l) for l in range(L))]
    order_w = [next(n for n in names_w if params[n] is model.layer_weight(k)) for k in range(L - 1)]
    order_b = [next(n for n in names_b if params[n] is model.layer_bias(l)) for l in range(L)]
    sub = {**{"m." + n: Wc[k] for k, n in enumerate(order_w)}, **{"m." + n: plain_b[l] for l, n in enumerate(order_b)}}
    oc = {n: p.detach().clone().requires_grad_() for n, p in other.items() if p.requires_grad}
    sub.update({"m." + n: p for n, p in oc.items()})
    out = torch.func.functional_call(_Wrapper(model), sub, (pos, neg))
    gw = torch.autograd.grad(out, Wc + bc + list(oc.values()))
    g_wc, g_bc, g_oc = gw[: L - 1], gw[L - 1 : 2 * L - 1], gw[2 * L - 1 :]
    # parameters outside the products (log variances, transverse fields) keep their plain gradient
    for (n, _), e in zip(oc.items(), g_oc):
        torch.testing.assert_close(got_other[n], e, rtol=1e-12, atol=1e-12)
    # the plain-parameter change of a centered step, per unit step
    exp_w = list(g_wc)
    exp_b = []
    for l in range(L):
        x = g_bc[l].clone()
        if l + 1 < L:
            x = x - g_wc[l] @ mu[l + 1]
        if l > 0:
            x = x - g_wc[l - 1].t() @ mu[l - 1]
        exp_b.append(x)
    for a, e in zip(got_w + got_b, exp_w + exp_b):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


class _Wrapper(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, pos, neg):
        return _loss(self.m, pos, neg)


def test_zero_offsets_are_the_identity():
    g = torch.Generator().manual_seed(0)
    model = DBM([6, 5, 4]).double()
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
    before = [p.grad.clone() for p in model.parameters()]
    centered_gradients(model, [torch.zeros(n, dtype=torch.float64) for n in model.layer_sizes])
    for a, b in zip(model.parameters(), before):
        torch.testing.assert_close(a.grad, b, rtol=0, atol=0)


def test_offsets_move_towards_batch_means_and_start_at_half():
    model = DBM([3, 2])
    offs = initial_offsets(model, torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(offs[1], torch.full((2,), 0.5))
    update_offsets(offs, [None, torch.tensor([1.0, 0.0])], 0.5)
    torch.testing.assert_close(offs[1], torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(offs[0], torch.tensor([0.1, 0.2, 0.3]))


def test_gaussian_visible_units_center_the_hidden_layer_only():
    from qidbm.lightning import BoltzmannModule
    from qidbm.lightning.centering import Centering

    BoltzmannModule(GRBM(4, 3), centering=Centering())  # accepted
    offs = initial_offsets(GRBM(4, 3), torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert torch.equal(offs[0], torch.zeros(4)) and torch.equal(offs[1], torch.full((3,), 0.5))
    # a visible offset given for Gaussian units is taken as 0: the same transform as with zeros
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=g) for p in GRBM(4, 3).parameters()]
    out = []
    for vis in (torch.ones(4), torch.zeros(4)):
        model = GRBM(4, 3)
        for p, gr in zip(model.parameters(), grads):
            p.grad = gr.clone()
        centered_gradients(model, [vis, torch.full((3,), 0.3)])
        out.append([p.grad for p in model.parameters()])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(out[0][0], grads[0])  # and the hidden offset did act
