"""Models against the independent dense oracle (tests/dense.py) and their classical twins."""

import pytest
import torch

from qidbm.models import DBM, GRBM, QGRBM, QRBM, RBM, QiDBM, build_model
from qidbm.quantum import softplus
from tests.dense import bits, dense_hamiltonian, dense_marginal, gibbs_diagonal


def randomize(model, seed, scale=1.0, gamma=(0.5, 3.0)):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "transverse_field" in name:
                p.copy_(torch.empty(p.shape, dtype=p.dtype).uniform_(*gamma, generator=g) * torch.sign(torch.randn(p.shape, generator=g, dtype=p.dtype)))
            elif "log_variance" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return model


def split(cfg, sizes, keep):
    out, s = [None] * len(sizes), 0
    for l in keep:
        out[l] = cfg[:, s : s + sizes[l]]
        s += sizes[l]
    return out


@pytest.mark.parametrize("coupled", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_qrbm_free_energy_matches_dense(seed, coupled):
    m = randomize(QRBM(3, 3, coupled_field=coupled).double(), seed)
    if coupled:
        with torch.no_grad():
            m.transverse_weight.normal_(0, 1.0)
    v = bits(3)
    p_model = torch.softmax(-m.free_energy(v), 0)
    p_dense = dense_marginal(m, [0])
    assert torch.allclose(p_model, p_dense, atol=1e-10)
    # the free energy itself (not only its softmax): -F(v) = log Tr_h <v| e^{-H} |v>
    H, X = dense_hamiltonian(m)
    for i, vv in enumerate(v):
        rows = (X[:, :3] == vv).all(1)
        blk = H[rows][:, rows]
        _, logz = gibbs_diagonal(blk)
        assert -m.free_energy(vv[None]).item() == pytest.approx(logz.item(), abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_qrbm_conditionals_match_dense_block(seed):
    m = randomize(QRBM(3, 2).double(), seed)
    H, X = dense_hamiltonian(m)
    for vv in bits(3):
        rows = (X[:, :3] == vv).all(1)
        blk = H[rows][:, rows]
        rho, _ = gibbs_diagonal(blk)
        st = m.hidden_statistics(vv[None])
        Xs = X[rows][:, 3:]
        for j in range(2):
            n_exp = (torch.diagonal(rho) * Xs[:, j]).sum()
            flip = torch.arange(4) ^ (1 << (1 - j))
            x_exp = rho[flip, torch.arange(4)].sum()
            assert st["n"][0, j].item() == pytest.approx(n_exp.item(), abs=1e-10)
            assert st["x"][0, j].item() == pytest.approx(x_exp.item(), abs=1e-10)
            assert m.conditional(1, [vv[None], None])[0][0, j].item() == pytest.approx(n_exp.item(), abs=1e-10)


@pytest.mark.parametrize("coupled", [False, True])
@pytest.mark.parametrize("sizes,q", [([3, 2, 2], [1]), ([2, 2, 2, 2], [2]), ([2, 2, 1, 2, 1], [1, 3])])
def test_qidbm_marginal_matches_dense(sizes, q, coupled):
    m = randomize(QiDBM(sizes, q, coupled_field=coupled).double(), 7)
    if coupled:
        with torch.no_grad():
            for p in m.transverse_weights.values():
                p.normal_(0, 0.8)
    classical = [l for l in range(len(sizes)) if l not in q]
    cfg = bits(sum(sizes[l] for l in classical))
    states = split(cfg, sizes, classical)
    p_model = torch.softmax(-m.marginal_free_energy(states, summed=q), 0)
    assert torch.allclose(p_model, dense_marginal(m, classical), atol=1e-10)
    # default Rao-Blackwellised marginal (a parity class) too
    S = m.default_summed_layers()
    kept = [l for l in range(len(sizes)) if l not in S]
    states = split(bits(sum(sizes[l] for l in kept)), sizes, kept)
    p_model = torch.softmax(-m.marginal_free_energy(states, summed=S), 0)
    assert torch.allclose(p_model, dense_marginal(m, kept), atol=1e-10)


def test_dbm_conditionals_match_enumeration():
    m = randomize(DBM([3, 2, 2]).double(), 3)
    cfg = bits(7)
    st = [cfg[:, :3], cfg[:, 3:5], cfg[:, 5:]]
    p = torch.softmax(-m.energy(st), 0)
    assert torch.allclose(p, dense_marginal(m, [0, 1, 2]), atol=1e-12)
    # p(x_1 = 1 | x_0, x_2) from the joint
    for i in range(cfg.shape[0]):
        same = (cfg[:, :3] == cfg[i, :3]).all(1) & (cfg[:, 5:] == cfg[i, 5:]).all(1)
        for j in range(2):
            on = same & (cfg[:, 3 + j] == 1)
            # marginal over the other unit of layer 1
            ref = p[on].sum() / p[same].sum()
            assert m.conditional(1, [c[i : i + 1] for c in st])[0][0, j].item() == pytest.approx(ref.item(), abs=1e-12)


def test_free_energy_formulas_rbm_grbm():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5, 4, generator=g, dtype=torch.float64)
    m = randomize(GRBM(4, 3).double(), 1)
    s2 = torch.exp(m.log_variance)
    ref = ((v - m.visible_bias) ** 2 / (2 * s2)).sum(1) - softplus(m.hidden_bias + (v / s2) @ m.weight).sum(1)
    assert torch.allclose(m.free_energy(v), ref, atol=1e-12)
    # GRBM p(v) ∝ exp(-F(v)) is the h-marginal of exp(-E(v,h)): check by summing h exactly
    hs = bits(3)
    E = torch.stack([m.energy([v, h.expand(5, -1)]) for h in hs], 1)
    assert torch.allclose(m.free_energy(v), -torch.logsumexp(-E, 1), atol=1e-12)


@pytest.mark.parametrize("seed", range(2))
def test_qgrbm_free_energy_matches_dense_block(seed):
    m = randomize(QGRBM(3, 2).double(), seed)
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(4, 3, generator=g, dtype=torch.float64)
    s2 = torch.exp(m.log_variance)
    X = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    Nn = torch.diag(torch.tensor([0.0, 1.0], dtype=torch.float64))
    I = torch.eye(2, dtype=torch.float64)
    for vv in v:
        phi = m.hidden_bias + (vv / s2) @ m.weight
        H = torch.zeros(4, 4, dtype=torch.float64)
        for j, (A, B) in enumerate(((Nn, I), (I, Nn))):
            H -= phi[j] * torch.kron(A, B)
        H -= m.transverse_field[0] * torch.kron(X, I) + m.transverse_field[1] * torch.kron(I, X)
        _, logz = gibbs_diagonal(H)
        ref = ((vv - m.visible_bias) ** 2 / (2 * s2)).sum() - logz
        assert m.free_energy(vv[None]).item() == pytest.approx(ref.item(), abs=1e-10)


@pytest.mark.parametrize(
    "classical,quantum",
    [
        (lambda: RBM(5, 4), lambda: QRBM(5, 4, transverse_field_init=0.0)),
        (lambda: GRBM(5, 4), lambda: QGRBM(5, 4, transverse_field_init=0.0)),
        (lambda: DBM([5, 4, 3]), lambda: QiDBM([5, 4, 3], [1], transverse_field_init=0.0)),
        (lambda: DBM([5, 4, 3, 2]), lambda: QiDBM([5, 4, 3, 2], [2], transverse_field_init=0.0)),
    ],
)
def test_classical_limit_exact(classical, quantum):
    torch.manual_seed(0)
    c = randomize(classical().double(), 5)
    q = quantum().double()
    q.load_state_dict(c.state_dict(), strict=False)
    assert all(p.abs().max() == 0 for n, p in q.named_parameters() if "transverse" in n)
    g = torch.Generator().manual_seed(1)
    B = 6
    st = c.random_state(B, g)
    S = q.default_summed_layers()
    f_c, f_q = c.marginal_free_energy(st, S), q.marginal_free_energy(st, S)
    assert torch.allclose(f_c, f_q, rtol=1e-14, atol=1e-13)
    if hasattr(c, "free_energy"):
        assert torch.allclose(c.free_energy(st[0]), q.free_energy(st[0]), rtol=1e-14, atol=1e-13)
    for l in range(c.num_layers):
        pc, pq = c.conditional(l, st)[0], q.conditional(l, st)[0]
        assert torch.allclose(pc, pq, rtol=1e-13, atol=1e-300)
    # same sampler, same random stream -> the same chains
    from qidbm.samplers import ExactStep, PaperStep

    s = PaperStep()
    a, _ = s.run(c, st, 5, generator=torch.Generator().manual_seed(2))
    b, _ = s.run(q, st, 5, generator=torch.Generator().manual_seed(2))
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-12)
    # at Gamma = 0 the exact step accepts every proposal
    _, s = ExactStep().run(q, st, 5, generator=torch.Generator().manual_seed(2))
    assert s.acceptance() and all(float(r) == 1.0 for r in s.acceptance().values())


def test_adjacent_or_visible_quantum_layers_rejected():
    with pytest.raises(ValueError, match="adjacent"):
        QiDBM([4, 3, 3, 2], [1, 2])
    with pytest.raises(ValueError, match="visible"):
        QiDBM([4, 3, 3], [0])
    with pytest.raises(ValueError, match="numbered"):
        QiDBM([4, 3, 3], [3])
    with pytest.raises(ValueError, match="DBM"):
        QiDBM([4, 3, 3], [])


def test_public_parameter_names_and_shapes():
    m = QRBM(7, 5)
    assert m.weight.shape == (7, 5) and m.visible_bias.shape == (7,) and m.hidden_bias.shape == (5,)
    assert m.transverse_field.shape == (5,)
    g = QGRBM(7, 5)
    assert g.log_variance.shape == (7,) and g.transverse_field.shape == (5,)
    d = QiDBM([7, 5, 4, 3], [1, 3])
    assert [tuple(w.shape) for w in d.weights] == [(7, 5), (5, 4), (4, 3)]
    assert [tuple(b.shape) for b in d.biases] == [(7,), (5,), (4,), (3,)]
    assert set(d.transverse_fields.keys()) == {"1", "3"} and d.transverse_fields["3"].shape == (3,)
    assert isinstance(d.weights, torch.nn.ParameterList) and isinstance(d.transverse_fields, torch.nn.ParameterDict)
    for model in (m, g, d, RBM(3, 2), GRBM(3, 2), DBM([3, 2, 2])):
        clone = build_model(type(model).__name__, model.config())
        clone.load_state_dict(model.state_dict())


def test_coupled_zero_equals_uncoupled():
    a = randomize(QiDBM([4, 3, 2], [1]).double(), 2)
    b = QiDBM([4, 3, 2], [1], coupled_field=True).double()
    b.load_state_dict(a.state_dict(), strict=False)
    st = a.random_state(8, torch.Generator().manual_seed(0))
    assert torch.equal(a.marginal_free_energy(st), b.marginal_free_energy(st))
    for l in range(3):
        assert torch.equal(a.conditional(l, st)[0], b.conditional(l, st)[0])


def test_free_energy_batch_shape_and_dtype():
    for m in (RBM(6, 4), QRBM(6, 4), GRBM(6, 4), QGRBM(6, 4)):
        v = torch.rand(9, 6).round()
        f = m.free_energy(v)
        assert f.shape == (9,) and f.dtype == torch.float32 and torch.isfinite(f).all()


def test_local_mode_is_a_fixed_point_of_the_block_ascent():
    # the returned state is unchanged by one more deterministic block update (binary layers)
    from qidbm.models import DBM, QiDBM

    torch.manual_seed(0)
    for m in (DBM([12, 8, 6]), QiDBM([12, 8, 6], [1])):
        m = m.double()
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 1.0)
        v = torch.rand(50, 12, dtype=torch.float64).round()
        st = m.local_mode(v, num_iters=200)
        for parity in (1, 0):
            for l in range(parity, m.num_layers, 2):
                assert torch.equal((m.conditional(l, st)[0] > 0.5).double(), st[l]), l


@pytest.mark.parametrize("cls", [DBM, QiDBM])
def test_orthogonal_weight_init_and_its_checkpoint_config(cls):
    torch.manual_seed(0)
    m = cls([12, 7, 9], weight_init="orthogonal")
    w0, w1 = m.layer_weight(0).detach().double(), m.layer_weight(1).detach().double()
    torch.testing.assert_close(w0.T @ w0, torch.eye(7, dtype=torch.float64), atol=1e-6, rtol=0)  # tall: columns orthonormal
    torch.testing.assert_close(w1 @ w1.T, torch.eye(7, dtype=torch.float64), atol=1e-6, rtol=0)  # wide: rows orthonormal
    assert all(b.abs().max() == 0 for b in m.biases)
    again = build_model(type(m).__name__, m.config())
    assert again.config()["weight_init"] == "orthogonal"
    assert "weight_init" not in cls([12, 7, 9]).config()  # default: configs stay as older checkpoints wrote them
    with pytest.raises(ValueError, match="weight_init must be"):
        cls([12, 7], weight_init="xavier")
