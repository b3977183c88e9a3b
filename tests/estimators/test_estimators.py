"""Estimators as objects: configuration round trips, combinations that cannot be built, the module's
one gradient for every estimator, and a new estimator added without touching the module."""

from __future__ import annotations

import pytest
import torch

from qidbm.estimators import (
    ClampedGibbs, ClampedLocalMode, FromData, FromNoise, MeanField, Mixture, NegativePhase, Persistent,
    TaniguchiChains, TemperedPersistent, build, to_config,
)
from qidbm.lightning import BoltzmannModule
from qidbm.lightning.centering import Centering
from qidbm.models import DBM, QRBM, RBM, QiDBM
from qidbm.samplers import ExactStep, PaperStep

NEGATIVES = [
    FromData(2), FromNoise(3, density=[0.2, 0.8]), FromNoise(4, anneal_from=0.5), Persistent(7, 2),
    Persistent(update="fused"), TemperedPersistent([1.0, 0.8], num_chains=5, sweeps=2),
    Mixture(FromNoise(2), TemperedPersistent([1.0, 0.9], 4, 2), weight=0.3), TaniguchiChains(),
]
POSITIVES = [ClampedGibbs(3), MeanField(4), ClampedLocalMode()]


@pytest.mark.parametrize("est", NEGATIVES + POSITIVES, ids=repr)
def test_config_round_trip(est):
    cfg = to_config(est)
    again = build(cfg)
    assert type(again) is type(est) and to_config(again) == cfg
    assert cfg["class_path"].startswith("qidbm.estimators.")


def test_build_refuses_classes_outside_the_package():
    with pytest.raises(ValueError, match="only classes of qidbm"):
        build({"class_path": "os.system", "init_args": {"command": "echo hi"}})
    with pytest.raises(TypeError, match="is not a NegativePhase"):
        build({"class_path": "qidbm.estimators.MeanField", "init_args": {}}, NegativePhase)


def test_nonsense_combinations_cannot_be_built():
    with pytest.raises(TypeError, match="fresh rows"):
        Mixture(Persistent(), Persistent())
    with pytest.raises(TypeError, match="keeps chains"):
        Mixture(FromNoise(2), FromData(1))
    with pytest.raises(ValueError, match="update='sweep'"):
        Mixture(FromNoise(2), Persistent(update="fused"))
    with pytest.raises(ValueError, match="sweeps must be an integer >= 1"):
        FromNoise(0)
    with pytest.raises(ValueError, match="num_chains"):
        Persistent(num_chains=0)
    with pytest.raises(ValueError, match="decrease strictly"):
        TemperedPersistent([1.0, 1.0])
    with pytest.raises(ValueError, match="must lie in"):
        FromNoise(3, anneal_from=0.0)


def test_fused_persistent_refuses_what_it_cannot_do_instead_of_ignoring_it():
    with pytest.raises(ValueError, match="PaperStep"):
        BoltzmannModule(QRBM(6, 3), negative=Persistent(update="fused"), kernel=ExactStep())
    with pytest.raises(ValueError, match="exactly the odd layers"):
        BoltzmannModule(QiDBM([6, 4, 3], quantum_layers=[2]), negative=Persistent(update="fused"))


def _gradient(module: BoltzmannModule, v: torch.Tensor) -> list[torch.Tensor]:
    module.zero_grad()
    loss, _ = module.loss(v)
    loss.backward()
    return [p.grad.clone() for p in module.model.parameters()]


@pytest.mark.parametrize("negative", NEGATIVES, ids=repr)
def test_every_estimator_trains_a_qidbm_through_the_same_step(negative):
    torch.manual_seed(0)
    model = QiDBM([6, 4, 3], quantum_layers=[1])
    positive = ClampedLocalMode() if isinstance(negative, TaniguchiChains) else MeanField()
    module = BoltzmannModule(model, negative=build(to_config(negative)), positive=positive, chain_seed=1)
    opt = module.configure_optimizers()
    v = torch.bernoulli(torch.full((5, 6), 0.4))
    before = [p.detach().clone() for p in model.parameters()]
    loss = module.fit_step(v, opt)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_fit_step_is_loss_backward_centering_and_one_sgd_step():
    torch.manual_seed(0)
    v = torch.bernoulli(torch.full((8, 6), 0.3))
    a = BoltzmannModule(DBM([6, 5, 4]), negative=FromData(1), positive=MeanField(), centering=Centering(0.1),
                        optimizer=lambda p: torch.optim.SGD(p, lr=0.1), chain_seed=3)
    b = BoltzmannModule(DBM([6, 5, 4]), negative=FromData(1), positive=MeanField(), centering=Centering(0.1),
                        optimizer=lambda p: torch.optim.SGD(p, lr=0.1), chain_seed=3)
    b.model.load_state_dict(a.model.state_dict())
    a.centering.start(a.model)
    b.centering.start(b.model)
    a.fit_step(v, a.configure_optimizers())
    # by hand: the same loss, its gradient, the centered transform, then p <- p - lr g
    b.zero_grad()
    loss, _ = b.loss(v)
    loss.backward()
    b.centering.transform(b.model)
    with torch.no_grad():
        for p in b.model.parameters():
            p -= 0.1 * p.grad
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


class Halfway(NegativePhase):
    """A new estimator in a file of its own: chains from the data's mean, ``sweeps`` sweeps."""

    def __init__(self, sweeps: int = 1) -> None:
        self.sweeps = sweeps

    def sample(self, model, v, kernel, generator):
        state = [torch.full_like(v, 0.5).bernoulli(generator=generator)] + model.random_state(len(v), generator)[1:]
        return kernel.run(model, state, self.sweeps, generator=generator)


def test_a_new_estimator_needs_no_change_to_the_module():
    module = BoltzmannModule(RBM(6, 3), negative=Halfway(2))
    assert torch.isfinite(module.fit_step(torch.bernoulli(torch.full((4, 6), 0.5)), module.configure_optimizers()))
    assert module.hparams["negative"]["class_path"].endswith("Halfway")


def test_the_module_saves_plain_data_only():
    module = BoltzmannModule(QiDBM([6, 4, 3], quantum_layers=[1]), negative=Mixture(FromNoise(2), Persistent(3)),
                             kernel=ExactStep(), centering=Centering())

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, (bool, int, float, str))

    assert plain(dict(module.hparams))
    rebuilt = BoltzmannModule(QiDBM([6, 4, 3], quantum_layers=[1]), **{k: v for k, v in module.hparams.items()})
    assert isinstance(rebuilt.kernel, ExactStep) and isinstance(rebuilt.negative, Mixture)
    assert to_config(rebuilt.negative) == to_config(module.negative)


def test_taniguchi_chains_score_full_states_and_sample_their_way():
    module = BoltzmannModule(QiDBM([6, 4, 3], quantum_layers=[1]), negative=TaniguchiChains(),
                             positive=ClampedLocalMode())
    assert module.summed_layers == (1,)
    spec = module.sampling()
    assert (spec.start, spec.num_steps, spec.output) == ("noise", 0, "local_search")
    assert BoltzmannModule(DBM([6, 4, 3]), negative=FromNoise(7)).sampling().num_steps == 7
    assert BoltzmannModule(DBM([6, 4, 3]), negative=Persistent()).sampling() is None
    assert isinstance(BoltzmannModule(DBM([6, 4, 3])).kernel, PaperStep)


def test_a_class_path_alone_builds_an_instance_with_its_defaults():
    est = build({"class_path": "qidbm.estimators.TaniguchiChains"})
    assert isinstance(est, TaniguchiChains)
    module = BoltzmannModule(DBM([6, 4, 3]), negative={"class_path": "qidbm.estimators.TaniguchiChains"},
                             positive={"class_path": "qidbm.estimators.ClampedLocalMode"})
    assert module.sampling().output == "local_search"
    assert build({"class_path": "torch.optim.SGD"})(torch.nn.Linear(2, 2).parameters()).defaults["lr"] == 1e-3


def test_quantum_tempering_as_the_negative_phase_draws_the_exact_distribution():
    """Persistent chains exchanged over transverse-field scales [1, 0.5, 0] (the last replica the classical
    twin), exact kernel: the first replica's visible states against enumeration (chi-square)."""
    from scipy import stats

    from tests.dense import dense_marginal

    torch.manual_seed(4)
    m = QRBM(4, 2).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
        m.transverse_field.fill_(2.0)
    est = TemperedPersistent(field_scales=[1.0, 0.5, 0.0], num_chains=4000, sweeps=40)
    g = torch.Generator().manual_seed(0)
    v0 = torch.zeros(1, 4, dtype=torch.float64)
    state, st = est.sample(m, v0, ExactStep(), g)
    idx = (state[0].long() * (2 ** torch.arange(3, -1, -1))).sum(1)
    counts = torch.bincount(idx, minlength=16).double()
    p = dense_marginal(m, [0]).double()
    assert stats.chisquare(counts.numpy(), (p * counts.sum()).numpy()).pvalue > 1e-3
    assert all(0 < float(r) <= 1 for r in st.swap_rates().values())
    with pytest.raises(ValueError, match="give one ladder"):
        TemperedPersistent()
    with pytest.raises(ValueError, match="use betas"):
        BoltzmannModule(RBM(4, 2), negative=TemperedPersistent(field_scales=[1.0, 0.0]))
