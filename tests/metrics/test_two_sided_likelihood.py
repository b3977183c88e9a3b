"""AIS and RAISE bracket the log-likelihood: exact oracles by enumeration (float64, small machines).

The oracles: ``exact_log_partition`` / ``exact_log_prob``, and the annealing model's marginal
``p_ann(v) = [p_0 T_1 ... T_K](v)`` computed from the exact transition matrices of the kernel
(every configuration of the chain's layers enumerated). ``E[w] = Z`` (AIS) and ``E[w] = p_ann(v)``
(RAISE) hold exactly for any number of intermediate distributions; the bias directions follow
from them by Jensen's and Gibbs' inequalities.
"""

import itertools
import math

import pytest
import torch

from qidbm.metrics.likelihood import (
    AnnealingPath,
    ScaledModel,
    ais_log_partition,
    annealing_schedule,
    exact_log_partition,
    exact_log_prob,
    raise_log_likelihood,
)
from qidbm.models import DBM, GRBM, QRBM, RBM, QiDBM
from qidbm.quantum import qubit_metropolis_weight, qubit_prob_one


@pytest.fixture(autouse=True)
def _one_thread():
    # these tensors are tiny: a second thread only adds contention (60x slower on a busy 2-core machine)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rnd(m, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.2 if "log_var" in n else scale))
    return m.requires_grad_(False)


def bits(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def model_samples(m, num, seed):
    """Exact draws of visible vectors from a binary machine (its enumerated marginal)."""
    v = bits(m.n_visible)
    p = torch.exp(exact_log_prob(m, v))
    idx = torch.multinomial(p, num, replacement=True, generator=torch.Generator().manual_seed(seed))
    return v[idx]


# ---------------------------------------------------------------- exact kernel matrices
def _grid(m, layers):
    """All configurations of ``layers``: a state list (None elsewhere) with one row per configuration."""
    sizes = [m.layer_sizes[l] for l in layers]
    cfg = bits(sum(sizes))
    st, s = [None] * m.num_layers, 0
    for l, n in zip(layers, sizes):
        st[l] = cfg[:, s : s + n]
        s += n
    return st, cfg.shape[0]


def kernel_matrix(path: AnnealingPath, beta: float) -> tuple[torch.Tensor, list[int]]:
    """T[x, x'] of ``path.transition(beta)`` on the chain's layers x_C (the even ones), exactly.

    ``T(x'|x) = sum_s P(s|x) [q(x'|s) alpha(x, x'; s) + 1[x' = x] R(x, s)]``: s the odd layers
    (Bernoulli or a qubit's Z outcome), q the classical conditional of the even layers,
    ``alpha = min(1, exp(A(x', s) - A(x, s)))`` with ``A`` the Metropolis weight of the quantum
    layers (1 without them), R the rejected mass.
    """
    m = path.at(beta)
    even = [l for l in range(m.num_layers) if l % 2 == 0]
    odd = [l for l in range(m.num_layers) if l % 2 == 1]
    assert set(path.summed) == set(odd)
    X, nx = _grid(m, even)
    S, ns = _grid(m, odd)
    # all (x, s) pairs, x major
    pair = [None] * m.num_layers
    for l in even:
        pair[l] = X[l].repeat_interleave(ns, 0)
    for l in odd:
        pair[l] = S[l].repeat(nx, 1)
    log_ps = torch.zeros(nx * ns, dtype=torch.float64)  # log P(s | x)
    A = torch.zeros(nx * ns, dtype=torch.float64)  # Metropolis weight A(x, s)
    for l in odd:
        phi = m.preactivation(l, pair)
        if l in m.quantum_layers:
            g = m.field(l, pair)
            p1 = qubit_prob_one(phi, g)
            A += qubit_metropolis_weight(pair[l], phi, g).sum(-1)
        else:
            p1 = torch.sigmoid(phi)
        log_ps += torch.where(pair[l] > 0.5, torch.log(p1), torch.log1p(-p1)).sum(-1)
    log_ps, A = log_ps.view(nx, ns), A.view(nx, ns)
    # q(x' | s): the even layers' classical conditionals given s
    log_q = torch.zeros(ns, nx, dtype=torch.float64)
    pair2 = [None] * m.num_layers
    for l in odd:
        pair2[l] = S[l].repeat_interleave(nx, 0)
    for l in even:
        pair2[l] = X[l].repeat(ns, 1)
    for l in even:
        p1 = torch.sigmoid(m.preactivation(l, pair2))
        log_q += torch.where(pair2[l] > 0.5, torch.log(p1), torch.log1p(-p1)).sum(-1).view(ns, nx)
    # alpha[x, s, x'] = min(1, exp(A(x', s) - A(x, s)))
    alpha = torch.exp((A.t()[None, :, :] - A[:, :, None]).clamp(max=0.0))
    move = torch.exp(log_q)[None] * alpha  # [x, s, x']
    reject = 1 - move.sum(-1)  # [x, s]
    T = (torch.exp(log_ps)[:, :, None] * move).sum(1) + torch.diag((torch.exp(log_ps) * reject).sum(1))
    return T, even


def base_distribution(path: AnnealingPath) -> torch.Tensor:
    """p_0 on x_C (the even layers, in ``_grid`` order): Bernoulli(sigmoid(a_0)) visibles, uniform hidden units."""
    m = path.model
    even = [l for l in range(m.num_layers) if l % 2 == 0]
    X, _ = _grid(m, even)
    p = torch.sigmoid(path.a0.double())
    logp = (X[0] * torch.log(p) + (1 - X[0]) * torch.log1p(-p)).sum(-1)
    for l in even[1:]:
        logp = logp - m.layer_sizes[l] * math.log(2)
    return torch.exp(logp)


def annealing_marginal(path: AnnealingPath, betas) -> torch.Tensor:
    """p_ann(v) = [p_0 T_{beta_1} ... T_{beta_K}](v), summed over the even hidden layers: [2^n_visible]."""
    p = base_distribution(path)
    for b in betas[1:]:
        p = p @ kernel_matrix(path, float(b))[0]
    m = path.model
    rest = sum(m.layer_sizes[l] for l in range(2, m.num_layers, 2))
    return p.view(2 ** m.n_visible, 2 ** rest).sum(1)  # the visible bits are the leading ones


# ---------------------------------------------------------------- the shared path
@pytest.mark.parametrize("make", [lambda: RBM(5, 3), lambda: QRBM(5, 3, coupled_field=True), lambda: GRBM(3, 4),
                                  lambda: DBM([4, 3, 3]), lambda: QiDBM([4, 3, 3], [1])])
def test_log_f_equals_the_scaled_model_at_every_beta(make):
    m = rnd(make().double(), 0)
    base = torch.randn(m.n_visible, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    path = AnnealingPath(m, base)
    st = path.base_sample(9, torch.Generator().manual_seed(2))
    betas = [0.0, 0.25, 0.7, 1.0]
    want = torch.stack([-ScaledModel(m, b, base).marginal_free_energy(st, path.summed).double() for b in betas])
    assert torch.allclose(path.log_f(st, betas), want, rtol=0, atol=1e-11)
    # log Z_0 by enumeration of the base model
    if not m.gaussian_visible:
        assert path.log_z0().item() == pytest.approx(exact_log_partition(ScaledModel(m, 0.0, base)).item(), abs=1e-10)


@pytest.mark.parametrize("make", [lambda: RBM(3, 2), lambda: QRBM(3, 2), lambda: QiDBM([3, 2, 2], [1])])
def test_transition_is_reversible_and_leaves_p_beta_invariant(make):
    m = rnd(make().double(), 3, scale=1.5)
    path = AnnealingPath(m, torch.tensor([0.3, -0.5, 1.0], dtype=torch.float64))
    assert path.reversible
    T, even = kernel_matrix(path, 0.6)
    X, _ = _grid(m, even)
    p = torch.exp(path.log_f(X, [0.6])[0])
    p = p / p.sum()
    assert torch.allclose(T.sum(1), torch.ones_like(p), atol=1e-12)
    flow = p[:, None] * T
    assert torch.allclose(flow, flow.t(), atol=1e-12)  # detailed balance
    assert torch.allclose(p @ T, p, atol=1e-12)


def test_kernel_matrix_matches_the_sampler():
    """The oracle's matrix is the sampler's kernel: one step from a fixed state, 40,000 chains."""
    m = rnd(QiDBM([3, 2, 2], [1]).double(), 4, scale=1.5)
    path = AnnealingPath(m)
    T, even = kernel_matrix(path, 1.0)
    X, nx = _grid(m, even)
    i = 5
    n = 40000
    st = [X[0][i].expand(n, -1).clone(), torch.zeros(n, 2, dtype=torch.float64), X[2][i].expand(n, -1).clone()]
    out = path.transition(1.0, st, torch.Generator().manual_seed(0))
    code = (torch.cat([out[0], out[2]], 1) * 2 ** torch.arange(4, -1, -1, dtype=torch.float64)).sum(1).long()
    freq = torch.bincount(code, minlength=nx).double() / n
    assert (freq - T[i]).abs().max() < 4 * math.sqrt(0.25 / n)


# ---------------------------------------------------------------- exact expectations of the weights
@pytest.mark.parametrize("make,seed", [(lambda: RBM(4, 3), 0), (lambda: QiDBM([3, 2, 2], [1]), 1)])
def test_ais_weight_is_an_unbiased_estimate_of_z(make, seed):
    m = rnd(make().double(), seed, scale=1.5)
    r = ais_log_partition(m, num_runs=20000, num_betas=4, generator=torch.Generator().manual_seed(seed))
    w = torch.exp(r.log_weights - exact_log_partition(m))  # w / Z
    assert abs(w.mean().item() - 1) < 4 * w.std().item() / math.sqrt(len(w))
    assert r.log_weights.mean().item() < exact_log_partition(m).item()  # E[log w] < log Z (Jensen)


@pytest.mark.parametrize("make,seed", [(lambda: RBM(4, 3), 0), (lambda: QRBM(3, 2), 5), (lambda: DBM([3, 2, 2]), 0),
                                       (lambda: QiDBM([3, 2, 2], [1]), 1)])
def test_raise_weight_is_an_unbiased_estimate_of_the_annealing_model(make, seed):
    """E[w] = p_ann(v) exactly with 3 intermediate steps, and the test tells p_ann(v) from p(v)."""
    m = rnd(make().double(), seed, scale=2.0)
    base = torch.linspace(-1, 1, m.n_visible, dtype=torch.float64)
    betas = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    p_ann = annealing_marginal(AnnealingPath(m, base), betas)
    p_true = torch.exp(exact_log_prob(m, bits(m.n_visible)))
    assert p_ann.sum().item() == pytest.approx(1.0, abs=1e-12)
    n = 6000
    separation = []
    for i in (0, 2 ** m.n_visible - 1, int(p_true.argmax()), int((p_ann - p_true).abs().argmax())):
        v = bits(m.n_visible)[i].expand(n, -1)
        log_w = raise_log_likelihood(m, v, num_runs=1, base_visible_bias=base, betas=betas,
                                     generator=torch.Generator().manual_seed(seed + i))
        w = torch.exp(log_w)
        se = w.std().item() / math.sqrt(n)
        assert abs(w.mean().item() - p_ann[i].item()) < 4 * se, (i, w.mean(), p_ann[i], se)
        assert log_w.mean().item() <= math.log(p_ann[i])  # E[log w] <= log p_ann(v) (Jensen)
        separation.append(abs(p_ann[i] - p_true[i]).item() / se)
    assert max(separation) > 6, separation  # the same check would reject p(v) in place of p_ann(v)


# ---------------------------------------------------------------- bias directions and agreement
@pytest.mark.parametrize("make,seed", [(lambda: RBM(8, 5), 0), (lambda: DBM([6, 4, 4]), 1), (lambda: QiDBM([6, 4, 4], [1]), 2)])
def test_few_betas_raise_errs_low_and_ais_errs_high(make, seed):
    """With 5 intermediate distributions, on data drawn from the machine: the RAISE average is below
    the exact average log-likelihood and AIS's log Z below the exact one (so its likelihood above)."""
    m = rnd(make().double(), seed, scale=1.5)
    v = model_samples(m, 300, seed)
    exact = exact_log_prob(m, v)
    est = raise_log_likelihood(m, v, num_runs=1, num_betas=6, generator=torch.Generator().manual_seed(seed))
    diff = est - exact
    assert diff.mean().item() < -4 * diff.std().item() / math.sqrt(len(diff)), (diff.mean(), diff.std())
    log_z = exact_log_partition(m).item()
    r = ais_log_partition(m, num_runs=2000, num_betas=6, generator=torch.Generator().manual_seed(seed))
    ais = torch.logsumexp(r.log_weights.view(500, 4), 1) - math.log(4)  # 500 independent 4-run estimates
    assert ais.mean().item() < log_z - 4 * ais.std().item() / math.sqrt(len(ais)), (ais.mean(), log_z)
    # the AIS log-likelihood log p~(v) - log Z_AIS (exact p~ here) is then above the exact one on average
    assert (exact + log_z - ais.mean()).mean() > exact.mean()


@pytest.mark.parametrize("make,seed", [(lambda: RBM(8, 5), 0), (lambda: QRBM(6, 4, coupled_field=True), 3),
                                       (lambda: GRBM(3, 4), 4), (lambda: DBM([6, 4, 4]), 1), (lambda: QiDBM([6, 4, 4], [1]), 2)])
def test_with_many_betas_ais_and_raise_agree_with_the_exact_likelihood(make, seed):
    m = rnd(make().double(), seed)
    g = torch.Generator().manual_seed(seed)
    if m.gaussian_visible:
        v = m.layer_bias(0).detach() + torch.randn(40, m.n_visible, generator=g, dtype=torch.float64)
    else:
        v = model_samples(m, 40, seed)
    exact = exact_log_prob(m, v)
    est = raise_log_likelihood(m, v, num_runs=4, num_betas=1500, generator=g)
    assert abs((est - exact).mean().item()) < 0.03, (est - exact)
    assert (est - exact).abs().max().item() < 0.6  # one example's estimate is noisier than the mean
    r = ais_log_partition(m, num_runs=64, num_betas=1500, generator=g)
    assert abs(r.log_z - exact_log_partition(m).item()) < max(3 * r.stderr, 0.02), r


def test_raise_refuses_a_kernel_it_cannot_reverse_and_bad_settings():
    m = QiDBM([3, 2, 2], [2]).double()  # quantum layer 2: the summed layer is even
    assert not AnnealingPath(m).reversible
    with pytest.raises(ValueError, match="reversible"):
        raise_log_likelihood(m, torch.zeros(1, 3, dtype=torch.float64), num_betas=3)
    with pytest.raises(ValueError, match="num_runs"):
        raise_log_likelihood(RBM(2, 2).double(), torch.zeros(1, 2, dtype=torch.float64), num_runs=0)
    with pytest.raises(ValueError, match="num_betas"):
        annealing_schedule(1)


def test_evaluate_reports_raise_beside_ais_on_either_binarisation(tmp_path):
    import qidbm
    import qidbm.api
    from qidbm.data import MNISTDataModule
    from qidbm.data.testing import make_idx_dataset

    make_idx_dataset(tmp_path, "MNIST", 64, 12, seed=0)
    info = MNISTDataModule(root=str(tmp_path), download=False, batch_size=16).data_info()
    m = rnd(RBM(784, 3), 0, scale=0.05)
    loaded = qidbm.Loaded.from_model(m, data_info=info)
    kw = dict(fid=False, ais_runs=4, ais_betas=6, ais_test_examples=10, prc_samples=0, copy_samples=0,
              data_root=str(tmp_path), estimate=False)
    out = qidbm.evaluate(loaded, raise_runs=1, binarization="stochastic", binarize_seed=3, **kw)
    assert out["binarization"]["kind"] == "stochastic" and out["binarization"]["seed"] == 3
    assert out["raise_runs"] == 1 and out["test_examples"] == 10
    assert out["test_log_likelihood_raise"] < out["test_log_likelihood"]  # 5 steps: the two sides far apart
    plain = qidbm.evaluate(loaded, **kw)
    assert "binarization" not in plain and "test_log_likelihood_raise" not in plain
    assert plain["test_log_likelihood"] != out["test_log_likelihood"]  # another test set
    with pytest.raises(qidbm.api.SettingError, match="raise_runs"):
        qidbm.evaluate(loaded, **{**kw, "ais_runs": 0}, raise_runs=1)
    with pytest.raises(qidbm.api.SettingError, match="binarization"):
        qidbm.evaluate(loaded, binarization="bernoulli", **kw)
