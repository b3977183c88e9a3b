"""Fused (torch.compile) closed forms against their eager twins, the eager fallbacks, and a training step."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from qidbm import fused, quantum
from qidbm.fused import fused_kernels, fused_kernels_enabled
from qidbm.estimators import Persistent
from qidbm.lightning.module import BoltzmannModule
from qidbm.models import QRBM
from qidbm.quantum import qubit_draw_prob, qubit_log_partition, softplus


def _fields(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(300, 40, generator=g, dtype=dtype) * 4
    phi[0, :5] = torch.tensor([0.0, 1e-30, -1e-30, 300.0, -300.0], dtype=dtype)
    gamma = torch.rand(40, generator=g, dtype=dtype) * 2 - 1
    gamma[:3] = torch.tensor([0.0, 1e-20, -3.0], dtype=dtype)  # Gamma = 0 meets phi = 0 at [0, 0]
    return phi, gamma


def _closed_forms(phi: torch.Tensor, gamma: torch.Tensor) -> list[torch.Tensor]:
    """Every kernel's outputs: log-partition and softplus values and gradients, draw probability."""
    p, g = phi.clone().requires_grad_(), gamma.clone().requires_grad_()
    f = qubit_log_partition(p, g).sum() + 0.5 * softplus(p).sum()
    gp, gg = torch.autograd.grad(f, (p, g))
    with torch.no_grad():
        draw = qubit_draw_prob(phi, gamma)
    return [qubit_log_partition(phi, gamma), softplus(phi), gp, gg, draw]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_kernels_match_the_eager_closed_forms(dtype):
    phi, gamma = _fields(dtype)
    eager = _closed_forms(phi, gamma)
    with fused_kernels(True):
        assert fused_kernels_enabled()
        compiled = _closed_forms(phi, gamma)
    assert not fused_kernels_enabled()
    eps = torch.finfo(dtype).eps
    for name, e, c in zip(("log_partition", "softplus", "d_phi", "d_gamma", "draw"), eager, compiled):
        assert torch.isfinite(c).all(), name
        # same arithmetic, vectorised differently: a few ulp of the value (absolute for [0, 1] statistics)
        scale = e.abs().clamp_min(1.0)
        assert ((c - e).abs() / scale).max() <= 16 * eps, name
    assert compiled[4][0, 0] == 0.5  # phi = Gamma = 0: the coin flip, exactly
    for k in (quantum._softplus_value, quantum._log_partition_and_derivatives, quantum._draw_prob):
        assert len(k.compiled_forms) == 1, k.__name__  # the compiled path ran


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken_compile(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no C++ compiler found\ndetails")
        return call

    phi, gamma = _fields(torch.float32)
    eager = qubit_draw_prob(phi, gamma)

    @fused.kernel
    def doubled(x):
        return 2 * x

    monkeypatch.setattr(fused.torch, "compile", broken_compile)
    monkeypatch.setattr(fused, "_failed", [])
    with fused_kernels(True), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = doubled(phi)
        again = doubled(phi)
        assert not fused_kernels_enabled()  # one failure turns the fused path off for the process
    assert torch.equal(out, 2 * phi) and torch.equal(again, 2 * phi)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "no C++ compiler found" in messages[0] and "fused_kernels: false" in messages[0]
    assert "details" not in messages[0]
    assert torch.equal(qubit_draw_prob(phi, gamma), eager)


def test_recorded_and_transformed_calls_stay_eager(monkeypatch):
    calls = []
    monkeypatch.setattr(fused.torch, "compile", lambda fn, **kw: calls.append(fn) or fn)

    @fused.kernel
    def square(x):
        return x * x

    x = torch.randn(5, requires_grad=True)
    with fused_kernels(True):
        y = square(x)  # autograd records this call: the eager form keeps the graph
        (gx,) = torch.autograd.grad(y.sum(), x)
        torch.func.vmap(square)(x.detach())  # under a transform: eager
        with FlopCounterMode(display=False):  # under a dispatch mode (Dynamo would find no frame): eager
            square(x.detach())
        assert calls == []
        square(x.detach())
    assert torch.equal(gx, 2 * x.detach())
    assert len(calls) == 1


def test_fused_kernels_rejects_non_booleans():
    with pytest.raises(TypeError, match="True or False"):
        with fused_kernels("yes"):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="fused_kernels must be true or false"):
        BoltzmannModule(QRBM(6, 4), fused_kernels="on")  # type: ignore[arg-type]


def test_fused_training_step_equals_the_eager_step():
    """One PCD-1 step of a QRBM: same loss, same gradients, same next chains as the eager step."""
    data = (torch.rand(32, 20, generator=torch.Generator().manual_seed(1)) < 0.3).float()

    def step(flag: bool):
        torch.manual_seed(0)
        model = QRBM(20, 12, weight_std=0.5)
        m = BoltzmannModule(model, negative=Persistent(sweeps=1), chain_seed=0, init_visible=None, fused_kernels=flag)
        loss, _ = m.loss(data)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()], [c.clone() for c in m.chains]

    e_loss, e_grads, e_chains = step(False)
    c_loss, c_grads, c_chains = step(True)
    assert torch.allclose(c_loss, e_loss, rtol=1e-6, atol=1e-5)
    for a, b in zip(c_grads, e_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    # the draws compare float32 uniforms with probabilities a few eps apart: equal but for ties
    for a, b in zip(c_chains, e_chains):
        assert (a != b).float().mean() < 1e-3
