"""bfloat16 matrix products of the chains (qidbm.precision)."""

import pytest
import torch

from qidbm.estimators import FromNoise, MeanField
from qidbm.lightning.module import BoltzmannModule
from qidbm.models import DBM, QiDBM
from qidbm.precision import current_matmul_precision, layer_product, matmul_precision
from qidbm.samplers.drawing import SamplingSpec, draw


def _weights(n_in=64, n_out=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_in, n_out, generator=g) * 0.1, (torch.rand(32, n_in, generator=g) < 0.5).float()


def test_bf16_product_is_the_rounded_weights_product():
    """Binary states are exact in bf16; the weights and the result are rounded to bf16 (2^-9
    relative each), the sum accumulates in float32: within 2^-8 of the float32 product, elementwise."""
    w, x = _weights()
    with matmul_precision("bfloat16"):
        y = layer_product(x, w)
        yt = layer_product(x[:, :48], w, transpose=True)
    assert y.dtype == torch.float32
    ref = (x.double() @ w.to(torch.bfloat16).double()).to(torch.bfloat16).float()
    assert torch.allclose(y, ref, rtol=2 ** -8, atol=0)
    exact = x @ w
    assert ((y - exact).abs() <= 2 ** -8 * (x.abs() @ w.abs()) + 1e-6).all()
    assert not torch.equal(y, exact)  # it really is another precision
    assert torch.allclose(yt, x[:, :48] @ w.t(), rtol=0, atol=2 ** -8 * (x[:, :48].abs() @ w.abs().t()).max().item())
    assert current_matmul_precision() == "float32"  # the context is restored
    assert torch.equal(layer_product(x, w), x @ w)


def test_autograd_through_bf16_products_and_cache_follows_optimizer():
    w, x = _weights()
    w = torch.nn.Parameter(w)
    with matmul_precision("bfloat16"):
        y = layer_product(x, w)  # differentiable: the gradient reaches w in float32
        (y ** 2).sum().backward()
    g_bf16, w.grad = w.grad.clone(), None
    ((x @ w) ** 2).sum().backward()
    assert g_bf16.dtype == torch.float32
    assert (g_bf16 - w.grad).norm() <= 2 ** -6 * w.grad.norm()
    assert not torch.equal(g_bf16, w.grad)
    w.grad = None
    with matmul_precision("bfloat16"):
        with torch.no_grad():
            before = layer_product(x, w)
        opt = torch.optim.SGD([w], lr=1.0, momentum=0.9)
        (layer_product(x, w) ** 2).sum().backward()
        opt.step()
        with torch.no_grad():
            after = layer_product(x, w)
    assert not torch.equal(before, after)  # the bf16 copy was refreshed after the in-place update
    with torch.no_grad():
        assert torch.allclose(after, x @ w, rtol=0, atol=2 ** -8 * (x.abs() @ w.abs()).max().item())


def test_bad_precision_is_refused_everywhere():
    with pytest.raises(ValueError, match="matmul_precision"):
        with matmul_precision("float16"):
            pass
    with pytest.raises(ValueError, match="matmul_precision"):
        SamplingSpec(matmul_precision="fp8")
    with pytest.raises(ValueError, match="matmul_precision"):
        BoltzmannModule(DBM([6, 4, 4]), matmul_precision="half")


def test_bf16_sampling_matches_float32_distribution():
    """Chains with bf16 products draw the same distribution as float32 ones up to the weights'
    rounding: the mean of each visible unit over 4,000 chains agrees within sampling error."""
    torch.manual_seed(0)
    m = QiDBM([12, 8, 8], quantum_layers=[1])
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.7)
    spec = dict(num_steps=30, start="noise", output="sample", batch_size=4000)
    a, _ = draw(m, 4000, SamplingSpec(**spec), generator=torch.Generator().manual_seed(1))
    b, _ = draw(m, 4000, SamplingSpec(**spec, matmul_precision="bfloat16"), generator=torch.Generator().manual_seed(2))
    se = (a.mean(0) * (1 - a.mean(0)) / 4000 * 2).sqrt().clamp_min(1e-3)
    assert ((a.mean(0) - b.mean(0)).abs() / se).max() < 4.5


def test_module_trains_with_bf16_products_and_float32_parameters():
    torch.manual_seed(0)
    v = (torch.rand(16, 10) < 0.5).float()
    losses, grads = {}, {}
    for prec in ("float32", "bfloat16"):
        m = DBM([10, 6, 6])
        mod = BoltzmannModule(m, negative=FromNoise(3), positive=MeanField(), matmul_precision=prec,
                              init_visible=None, chain_seed=0)
        loss, _ = mod.loss(v)
        loss.backward()
        assert loss.dtype == torch.float32 and m.layer_weight(0).grad.dtype == torch.float32
        losses[prec] = loss.item()
        grads[prec] = m.layer_weight(0).grad.clone()
    assert losses["float32"] == pytest.approx(losses["bfloat16"], abs=1.0)
    assert torch.isfinite(grads["bfloat16"]).all()
