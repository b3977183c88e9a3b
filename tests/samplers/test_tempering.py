"""Replica exchange: the ladders against the dense Hamiltonian, the target replica against exact
enumeration (chi-square), and a bimodal machine that block Gibbs cannot cross in time but the
exchange can."""

import pytest
import torch
from scipy import stats

from qidbm.estimators import FromNoise, to_config
from qidbm.models import GRBM, QGRBM, RBM, QiDBM
from qidbm.samplers import ExactStep, PaperStep
from qidbm.samplers.tempering import ReplicaExchange, field_scaled_machine, tempered_machine
from tests.dense import dense_hamiltonian, dense_marginal
from tests.samplers.test_gibbs import chi2_pvalue, random_model, visible_counts

CHAINS, SWEEPS, REPEATS = 4000, 40, 3


@pytest.mark.parametrize("kind", ["qrbm", "qidbm"])
def test_tempered_machine_scales_the_whole_hamiltonian(kind):
    m = random_model(kind, gamma=1.3, coupled=True, seed=3)
    H, _ = dense_hamiltonian(m)
    Hb, _ = dense_hamiltonian(tempered_machine(m, 0.37))
    torch.testing.assert_close(Hb, 0.37 * H, rtol=1e-12, atol=1e-12)
    # the original machine is untouched
    torch.testing.assert_close(dense_hamiltonian(m)[0], H, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["qrbm", "qidbm"])
def test_field_scaled_machine_scales_only_the_transverse_term(kind):
    m = random_model(kind, gamma=1.3, coupled=True, seed=4)
    H, _ = dense_hamiltonian(m)
    Hs, _ = dense_hamiltonian(field_scaled_machine(m, 0.25))
    diag = torch.diag(torch.diagonal(H))
    torch.testing.assert_close(Hs, diag + 0.25 * (H - diag), rtol=1e-12, atol=1e-12)
    H0, _ = dense_hamiltonian(field_scaled_machine(m, 0.0))
    torch.testing.assert_close(H0, diag, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls, kwargs", [(GRBM, {}), (QGRBM, {}), (QGRBM, {"coupled_field": True})])
def test_tempered_gaussian_machine_has_beta_times_the_joint_energy(cls, kwargs):
    g = torch.Generator().manual_seed(5)
    m = cls(4, 3, **kwargs).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    t = tempered_machine(m, 0.4)
    v = torch.randn(50, 4, generator=g, dtype=torch.float64) * 2
    h = (torch.rand(50, 3, generator=g, dtype=torch.float64) < 0.5).double()
    # E(v, h) up to a constant in v and h: the difference between two states scales by beta
    d = m.energy([v, h]) - m.energy([v.flip(0), h.flip(0)])
    dt = t.energy([v, h]) - t.energy([v.flip(0), h.flip(0)])
    torch.testing.assert_close(dt, 0.4 * d, rtol=1e-12, atol=1e-12)
    if m.quantum_layers:  # the transverse field scales too (its coupling reads v / s^2)
        torch.testing.assert_close(t.field(1, [v, h]), 0.4 * m.field(1, [v, h]), rtol=1e-12, atol=1e-12)


def _target_replica_pvalues(m, make, kernel, seed0):
    p = dense_marginal(m, [0])
    pvals, rates = [], None
    for r in range(REPEATS):
        gen = torch.Generator().manual_seed(seed0 + r)
        rx = make(m, kernel)
        states, st = rx.run(rx.initial_states(CHAINS, gen), SWEEPS, generator=gen)
        pvals.append(chi2_pvalue(visible_counts(states[0][0], m.n_visible), p))
        rates = [float(r) for r in st.swap_rates().values()]
    return pvals, rates


@pytest.mark.parametrize("kind", ["qrbm", "qidbm"])
@pytest.mark.parametrize("ladder", ["temperatures", "field_scales"])
def test_target_replica_draws_the_exact_distribution(kind, ladder):
    m = random_model(kind, gamma=2.0, coupled=True, seed=11)
    if ladder == "temperatures":
        make = lambda m, k: ReplicaExchange.temperatures(m, [1.0, 0.7, 0.4], k)  # noqa: E731
    else:
        make = lambda m, k: ReplicaExchange.field_scales(m, [1.0, 0.5, 0.0], k)  # noqa: E731
    pvals, rates = _target_replica_pvalues(m, make, ExactStep(), seed0=200)
    combined = stats.combine_pvalues(pvals, method="fisher").pvalue
    assert combined > 0.01, f"replica exchange failed chi-square: p-values {pvals}"
    assert len(rates) == 2 and all(0.0 < r <= 1.0 for r in rates)


def bimodal_rbm():
    """An RBM with two symmetric modes, few visible units on or few off (p(s) with s = sum v:
    ``C(6, s) e^{-3s} (1 + e^{6s - 18})``, 0.2 % at the barrier s = 3): from the all-off state
    block Gibbs needs h = 1, probability ~1e-5 per sweep, to cross."""
    m = RBM(6, 1).double()
    with torch.no_grad():
        m.weight.fill_(6.0)
        m.visible_bias.fill_(-3.0)
        m.hidden_bias.fill_(-18.0)
    return m


def test_exchange_crosses_between_modes_where_block_gibbs_stays():
    m = bimodal_rbm()
    p = dense_marginal(m, [0])
    s = torch.tensor([bin(i).count("1") for i in range(64)])
    on = p[s >= 4].sum().item()
    assert 0.45 < on < 0.55  # two modes, each heavy
    gen = torch.Generator().manual_seed(0)
    start = [torch.zeros(2000, 6, dtype=torch.float64), torch.zeros(2000, 1, dtype=torch.float64)]
    plain, _ = PaperStep().run(m, start, 30, generator=gen)
    plain_on = (plain[0].sum(1) >= 4).double().mean().item()
    rx = ReplicaExchange.temperatures(m, [1.0, 0.6, 0.35, 0.2, 0.1], PaperStep())
    states, st = rx.run([[s.clone() for s in start] for _ in range(5)], 30, generator=gen)
    pt_on = (states[0][0].sum(1) >= 4).double().mean().item()
    assert plain_on < 0.05, plain_on  # stuck in the all-off mode
    assert abs(pt_on - on) < 0.05, (pt_on, on)
    assert min(float(r) for r in st.swap_rates().values()) > 0.05, st.swap_rates()


def test_ladders_reject_bad_values_with_clear_errors():
    m = random_model("qrbm", gamma=1.0, coupled=False, seed=1)
    k = PaperStep()
    with pytest.raises(ValueError, match="first beta must be 1"):
        ReplicaExchange.temperatures(m, [0.9, 0.5], k)
    with pytest.raises(ValueError, match="decrease strictly"):
        ReplicaExchange.temperatures(m, [1.0, 0.5, 0.5], k)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        ReplicaExchange.temperatures(m, [1.0, 0.0], k)
    with pytest.raises(ValueError, match="at least two"):
        ReplicaExchange.field_scales(m, [1.0], k)
    with pytest.raises(ValueError, match="needs a quantum machine"):
        ReplicaExchange.field_scales(RBM(3, 2), [1.0, 0.0], k)
    rx = ReplicaExchange.temperatures(m, [1.0, 0.5], k)
    with pytest.raises(ValueError, match="2 machines"):
        rx.run([m.random_state(3)], 1)


def test_refresh_follows_the_machine():
    m = random_model("qidbm", gamma=1.0, coupled=False, seed=2)
    rx = ReplicaExchange.temperatures(m, [1.0, 0.5], PaperStep())
    with torch.no_grad():
        m.layer_weight(0).add_(1.0)
    rx.refresh(m)
    torch.testing.assert_close(rx.ladder[1].layer_weight(0), 0.5 * m.layer_weight(0))
    assert rx.ladder[0] is m
    torch.testing.assert_close(rx.ladder[1].transverse_parameter(1).detach(), 0.5 * m.transverse_parameter(1).detach())


def test_draw_with_replica_exchange_reports_swap_rates():
    from qidbm.samplers import SamplingSpec, draw

    m = random_model("qidbm", gamma=1.0, coupled=False, seed=5)
    spec = SamplingSpec(num_steps=5, output="sample", replica_betas=(1.0, 0.5), batch_size=7)
    x, st = draw(m, 10, spec, generator=torch.Generator().manual_seed(0))
    assert x.shape == (10, 3) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert list(st.swap_rates()) == [0]
    assert "replica_betas=(1.0, 0.5)" in spec.describe()
    assert "replica" not in SamplingSpec().describe()
    with pytest.raises(ValueError, match="choose one replica ladder"):
        SamplingSpec(replica_betas=(1.0, 0.5), replica_field_scales=(1.0, 0.0))


def test_sample_cli_takes_a_ladder(tmp_path, capsys):
    import argparse

    from qidbm.samplers.arguments import add_sampling_arguments, spec_from_arguments

    p = argparse.ArgumentParser()
    add_sampling_arguments(p)
    a = p.parse_args(["--replica-field-scales", "1,0.5,0"])
    spec = spec_from_arguments(a, {"negative": to_config(FromNoise(20))})
    assert spec.replica_field_scales == (1.0, 0.5, 0.0) and spec.num_steps == 20
    with pytest.raises(SystemExit):
        p.parse_args(["--replica-betas", "1,a"])
    assert "comma-separated numbers" in capsys.readouterr().err


def test_swap_free_energies_stay_float32_inside_a_bfloat16_context():
    from qidbm.models import DBM
    from qidbm.precision import matmul_precision

    torch.manual_seed(0)
    m = DBM([20, 12, 8])
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 1.0)
    rx = ReplicaExchange.temperatures(m, [1.0, 0.8], PaperStep())
    state = m.random_state(64)
    exact = m.marginal_free_energy(state, summed=())
    with matmul_precision("bfloat16"):
        assert not torch.equal(m.marginal_free_energy(state, summed=()), exact)  # bfloat16 does change F
        torch.testing.assert_close(rx._free_energy(0, state), exact, rtol=0, atol=0)


def test_a_run_continued_in_pieces_is_the_run_in_one_piece():
    # first_round keeps the even/odd alternation of the pairs: 4 pieces of 1 round = 1 run of 4
    torch.manual_seed(0)
    model = QiDBM([4, 3, 3], quantum_layers=[1])
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.7)
    rx = ReplicaExchange.field_scales(model, [1.0, 0.6, 0.3, 0.0], ExactStep())
    start = rx.initial_states(20, torch.Generator().manual_seed(1))
    whole, s_whole = rx.run(start, 4, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    pieces, rates = start, []
    for t in range(4):
        pieces, s = rx.run(pieces, 1, generator=g, first_round=t)
        rates.append(s.swap_rates())
    for a, b in zip(whole, pieces):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    assert set(rates[0]) == {0, 2} and set(rates[1]) == {1}   # even rounds offer 0-1, 2-3; odd rounds 1-2
