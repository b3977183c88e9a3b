"""Annealed chains from noise (``FromNoise(anneal_from=...)`` / ``anneal_from``): the schedule, one sweep per
temperature on the tempered machine, the crossing that annealing buys on a bimodal machine, and the
training and sampling options that carry it."""

import argparse

import pytest
import torch

from qidbm.estimators import FromNoise, Persistent, to_config
from qidbm.lightning import BoltzmannModule
from qidbm.models import GRBM
from qidbm.samplers import PaperStep, SamplingSpec, draw
from qidbm.samplers.arguments import add_sampling_arguments, spec_from_arguments
from qidbm.samplers.drawing import trained_sampling
from qidbm.samplers.tempering import annealed_run, annealing_betas, tempered_machine
from tests.samplers.test_tempering import bimodal_rbm


def gaussian_machine(seed=0):
    torch.manual_seed(seed)
    m = GRBM(6, 4).double()
    with torch.no_grad():
        m.weight.normal_()
        m.hidden_bias.normal_()
        m.visible_bias.normal_()
        m.log_variance.uniform_(-1, 0.5)
    return m


def test_betas_rise_geometrically_to_one():
    b = annealing_betas(0.01, 5)
    assert b == pytest.approx([0.01, 0.01 ** 0.75, 0.1, 0.01 ** 0.25, 1.0])
    assert annealing_betas(0.3, 1) == [1.0]
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            annealing_betas(bad, 4)
    with pytest.raises(ValueError, match="at least one sweep"):
        annealing_betas(0.5, 0)


def test_at_beta_one_an_annealed_run_is_the_plain_run():
    m, k = gaussian_machine(), PaperStep()
    s0 = m.random_state(7, torch.Generator().manual_seed(3))
    a, _ = annealed_run(m, k, s0, [1.0] * 4, torch.Generator().manual_seed(1))
    b, _ = k.run(m, s0, 4, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("beta", [0.5, 0.13])
def test_each_sweep_runs_on_the_tempered_machine_and_leaves_the_model_alone(beta):
    m, k = gaussian_machine(1), PaperStep()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    s0 = m.random_state(7, torch.Generator().manual_seed(3))
    a, _ = annealed_run(m, k, s0, [beta, beta, 1.0], torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    t = tempered_machine(m, beta)
    b, _ = k.run(t, s0, 2, generator=g)
    b, _ = k.run(m, b, 1, generator=g)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    for n, p in m.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        annealed_run(m, k, s0, [0.0, 1.0])


def test_annealing_crosses_between_modes_where_block_gibbs_stays():
    m = bimodal_rbm()
    start = [torch.zeros(2000, 6, dtype=torch.float64), torch.zeros(2000, 1, dtype=torch.float64)]
    k = PaperStep()
    plain, _ = k.run(m, start, 30, generator=torch.Generator().manual_seed(0))
    annealed, _ = annealed_run(m, k, start, annealing_betas(0.02, 30), torch.Generator().manual_seed(0))
    on = lambda s: (s[0].sum(1) >= 4).double().mean().item()  # noqa: E731
    assert on(plain) < 0.05, on(plain)  # stuck in the all-off mode
    assert 0.3 < on(annealed) < 0.7, on(annealed)  # both modes reached (they weigh the same)


def test_training_anneals_the_noise_rows_and_sampling_follows():
    torch.manual_seed(0)
    module = BoltzmannModule(gaussian_machine(2), negative=FromNoise(3, anneal_from=0.2), chain_seed=5)
    v = torch.randn(8, 6, dtype=torch.float64)
    neg, _ = module.negative.sample(module.model, v, module.kernel, module.generator)
    g = torch.Generator().manual_seed(5)
    start = module.model.random_state(8, g)
    ref, _ = annealed_run(module.model, module.kernel, start, annealing_betas(0.2, 3), g)
    for x, y in zip(neg, ref):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    spec = trained_sampling(dict(module.hparams), gaussian_visible=True)
    assert spec.anneal_from == 0.2 and spec.num_steps == 3 and "anneal_from=0.2" in spec.describe()
    assert "anneal" not in SamplingSpec().describe()
    x, _ = draw(module.model, 5, spec, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 6) and torch.isfinite(x).all()


@pytest.mark.parametrize("anneal_from", [0.0, 2.0, float("nan")])
def test_noise_anneal_rejects_what_it_cannot_anneal(anneal_from):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        FromNoise(5, anneal_from=anneal_from)
    with pytest.raises(TypeError):
        Persistent(sweeps=5, anneal_from=0.5)  # only chains started from noise are annealed


def test_sampling_options_take_or_override_the_trained_annealing():
    p = argparse.ArgumentParser()
    add_sampling_arguments(p)
    trained = {"negative": to_config(FromNoise(20, anneal_from=0.1))}
    assert spec_from_arguments(p.parse_args([]), trained, True).anneal_from == 0.1
    assert spec_from_arguments(p.parse_args(["--anneal-from", "1"]), trained, True).anneal_from == 1.0
    assert spec_from_arguments(p.parse_args(["--anneal-from", "0.3"]), None).anneal_from == 0.3
    assert spec_from_arguments(p.parse_args(["--start", "data"]), trained, True).anneal_from == 1.0
    # a replica ladder replaces the trained annealing; both at once are an error
    assert spec_from_arguments(p.parse_args(["--replica-betas", "1,0.5"]), trained, True).anneal_from == 1.0
    with pytest.raises(ValueError, match="replica ladders"):
        SamplingSpec(anneal_from=0.5, replica_betas=(1.0, 0.5))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        SamplingSpec(anneal_from=0.0)
