"""The kernel interface: options -> kernel objects, statistics returned per call, not kept on the kernel."""

import pytest
import torch

from qidbm.estimators import ClampedGibbs, Persistent
from qidbm.lightning import BoltzmannModule
from qidbm.models import QiDBM
from qidbm.samplers import (
    ChainStats,
    ExactStep,
    GaussianGibbs,
    LangevinVisible,
    PaperStep,
    make_kernel,
)


def _model():
    torch.manual_seed(0)
    m = QiDBM([5, 4, 3], [1], weight_std=0.5, transverse_field_init=2.0).double()
    return m


def test_make_kernel_maps_the_config_strings_onto_objects():
    k = make_kernel("paper", "gibbs")
    assert type(k) is PaperStep and type(k.visible) is GaussianGibbs
    k = make_kernel("exact")
    assert type(k) is ExactStep and type(k.visible) is GaussianGibbs
    k = make_kernel("paper", "langevin", langevin_steps=3, langevin_step_size=0.2)
    assert type(k.visible) is LangevinVisible and (k.visible.steps, k.visible.step_size) == (3, 0.2)
    with pytest.raises(ValueError, match="langevin_steps"):
        make_kernel(langevin_steps=0)


def test_statistics_are_returned_per_call_and_not_kept_on_the_kernel():
    m = _model()
    k = ExactStep()
    before = dict(vars(k))
    g = torch.Generator().manual_seed(0)
    _, s1 = k.run(m, m.random_state(50, g), 3, generator=g)
    _, s2 = k.run(m, m.random_state(20, g), 1, generator=g)
    assert vars(k) == before
    assert s1.accept_count == {1: 50 * 3} and s2.accept_count == {1: 20}
    merged = ChainStats().merge(s1).merge(s2)
    assert merged.accept_count == {1: 170}
    assert float(merged.acceptance()[1]) == pytest.approx(float((s1.accept_sum[1] + s2.accept_sum[1]) / 170))
    _, s3 = PaperStep().run(m, m.random_state(5, g), 2, generator=g)
    assert s3.acceptance() == {}


def test_module_logs_the_acceptance_of_the_negative_chains_only():
    m = _model()
    module = BoltzmannModule(m, kernel=ExactStep(), negative=Persistent(30), positive=ClampedGibbs(4), chain_seed=0)
    calls = []
    run = module.kernel.run

    def recording_run(model, state, num_steps, clamped=(), generator=None, progress=False):
        out = run(model, state, num_steps, clamped, generator, progress)
        calls.append((tuple(clamped), out[1]))
        return out

    module.kernel.run = recording_run
    _, terms = module.loss(torch.rand(8, 5, dtype=torch.float64).round())
    clamped = [s for c, s in calls if c]
    negative = [s for c, s in calls if not c]
    assert len(clamped) == 1 and len(negative) == 1
    assert clamped[0].accept_count == {1: 8 * 4} and negative[0].accept_count == {1: 30}
    assert set(terms) >= {"acceptance/layer1"}
    assert float(terms["acceptance/layer1"]) == pytest.approx(float(negative[0].acceptance()[1]))
    paper = BoltzmannModule(m, chain_seed=0)
    assert not any(k.startswith("acceptance") for k in paper.loss(torch.rand(8, 5, dtype=torch.float64).round())[1])
