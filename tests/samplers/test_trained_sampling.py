"""The sampling a checkpoint was trained for, and Taniguchi et al.'s sampler as an output option."""

import torch

from qidbm.estimators import FromData, FromNoise, Mixture, Persistent, TaniguchiChains, TemperedPersistent, to_config
from qidbm.models import DBM, QiDBM
from qidbm.samplers import ExactStep, LangevinVisible, PaperStep
from qidbm.samplers.drawing import SamplingSpec, draw, trained_sampling


def hparams(**objects):
    """Training hyperparameters as a checkpoint stores them: each object as {class_path, init_args}."""
    return {k: to_config(v) for k, v in objects.items()}


def randomised(m, std: float, seed: int):
    """``m`` with every parameter drawn from N(0, std^2) (seeded), returned for chaining."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, std, generator=g)
    return m


def test_noise_started_training_is_sampled_the_same_way():
    spec = trained_sampling(hparams(negative=FromNoise(20), kernel=ExactStep()))
    assert (spec.start, spec.num_steps, spec.output, spec.quantum_step) == ("noise", 20, "sample", "exact")
    spec = trained_sampling(hparams(negative=FromNoise(20)), gaussian_visible=True)
    assert (spec.num_steps, spec.output) == (20, "mean")
    spec = trained_sampling(hparams(negative=FromNoise(20), kernel=PaperStep(LangevinVisible(5, 0.05)),
                                    matmul_precision="bfloat16"), gaussian_visible=True)
    assert (spec.quantum_step, spec.visible_step, spec.matmul_precision) == ("paper", "langevin", "bfloat16")
    spec = trained_sampling(hparams(negative=Mixture(FromNoise(7), TemperedPersistent([1.0, 0.5]))))
    assert (spec.start, spec.num_steps) == ("noise", 7)  # a mixture is sampled as its fresh rows
    spec = trained_sampling(hparams(negative=TaniguchiChains()))
    assert (spec.start, spec.num_steps, spec.output) == ("noise", 0, "local_search")
    assert trained_sampling(hparams(negative=Persistent(sweeps=5))) is None
    assert trained_sampling(hparams(negative=FromData(5))) is None
    assert trained_sampling(None) is None


def test_sample_output_names_the_read_out_of_any_protocol():
    noise = hparams(negative=FromNoise(20), sample_output="local_mode")
    assert trained_sampling(noise, gaussian_visible=True).output == "local_mode"
    assert trained_sampling(noise).output == "local_mode"
    assert trained_sampling({**noise, **hparams(negative=TaniguchiChains())}).output == "local_mode"
    spec = trained_sampling(hparams(negative=Persistent(sweeps=5), sample_output="mean_field"))
    assert spec == SamplingSpec(output="mean_field")  # the global defaults, read out as asked
    assert trained_sampling({**noise, "sample_output": None}, gaussian_visible=True).output == "mean"


def test_sample_steps_name_the_sweeps_of_any_protocol():
    spec = trained_sampling(hparams(negative=Mixture(FromNoise(20), TemperedPersistent([1.0, 0.5])), sample_steps=100))
    assert (spec.start, spec.num_steps) == ("noise", 100)  # the fresh rows' start, more sweeps
    spec = trained_sampling(hparams(negative=Persistent(sweeps=5), sample_steps=50))
    assert spec == SamplingSpec(num_steps=50)  # the global defaults, with these sweeps
    assert trained_sampling(hparams(negative=FromNoise(20), sample_steps=None)).num_steps == 20


def test_local_search_output_is_a_visible_local_mode():
    for m in (DBM([6, 4, 3]), QiDBM([6, 4, 3], [1])):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 1, generator=g)
        x, _ = draw(m, 50, SamplingSpec(num_steps=0, output="local_search", batch_size=20), generator=g)
        assert x.shape == (50, 6) and set(x.unique().tolist()) <= {0.0, 1.0}


def test_mode_output_is_the_most_probable_visible_state_of_the_same_chains():
    """``mode``: 1[E[v | h] > 1/2] of the chains that ``mean`` reads out (same seed, same chains), the
    mean itself for Gaussian units."""
    from qidbm.models import GRBM

    m = randomised(QiDBM([8, 5, 4], [1]).double(), 1.5, 2)
    spec = dict(num_steps=4, start="noise", batch_size=64)
    mean, _ = draw(m, 64, SamplingSpec(output="mean", **spec), generator=torch.Generator().manual_seed(5))
    mode, _ = draw(m, 64, SamplingSpec(output="mode", **spec), generator=torch.Generator().manual_seed(5))
    assert torch.equal(mode, (mean > 0.5).double())
    assert 0 < mode.mean() < 1
    gm = GRBM(5, 3).double()
    a, _ = draw(gm, 10, SamplingSpec(output="mean", **spec), generator=torch.Generator().manual_seed(5))
    b, _ = draw(gm, 10, SamplingSpec(output="mode", **spec), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_mean_field_output_is_the_visible_mean_under_the_hidden_mean_field():
    """E[v | h = <h>_v] from the same chain's last visible sample, against the closed forms:
    <h> = sigmoid(b + W^T v / s^2) (GRBM), the qubit's <n> at the same field (QGRBM); E[v|h] = mu + W h."""
    from qidbm.models import GRBM, QGRBM
    from qidbm.quantum import qubit_prob_one

    for m in (GRBM(5, 3), QGRBM(5, 3)):
        m = randomised(m.double(), 0.7, 1)
        spec = dict(num_steps=3, start="noise", batch_size=40)
        v, _ = draw(m, 40, SamplingSpec(output="sample", **spec), generator=torch.Generator().manual_seed(7))
        out, _ = draw(m, 40, SamplingSpec(output="mean_field", **spec), generator=torch.Generator().manual_seed(7))
        phi = m.hidden_bias + (v / m.log_variance.exp()) @ m.weight
        h = torch.sigmoid(phi) if isinstance(m, GRBM) else qubit_prob_one(phi, m.transverse_parameter(1).expand_as(phi))
        torch.testing.assert_close(out, m.visible_bias + h @ m.weight.T, rtol=1e-10, atol=1e-10)


def test_noise_density_sets_each_chains_start_density_and_follows_the_training():
    import argparse

    import pytest

    from qidbm.models import GRBM, RBM
    from qidbm.samplers.arguments import add_sampling_arguments, spec_from_arguments

    m = DBM([400, 5, 3])
    g = torch.Generator().manual_seed(0)
    v = m.random_state(2000, g, visible_density=(0.1, 0.3))[0]
    q = v.mean(1)  # each chain's own density, U(0.1, 0.3) up to 400-pixel noise (sd <= 0.025)
    assert q.min() > 0.1 - 0.1 and q.max() < 0.3 + 0.1 and abs(q.mean() - 0.2) < 0.01
    assert q.std() > 0.05  # spread across chains, not one density for all (U(0.1, 0.3) has sd 0.058)
    assert torch.equal(m.random_state(3, g, visible_density=(0.0, 0.0))[0], torch.zeros(3, 400))
    assert abs(m.random_state(2000, g)[0].mean() - 0.5) < 0.01  # the default stays uniform noise
    same = [m.random_state(5, torch.Generator().manual_seed(3), visible_density=d) for d in (None, (0.5, 0.5))]
    assert all(torch.equal(a, b) for a, b in zip(*same))  # one density for all chains: the default stream
    for bad in ((0.6, 0.4), (-0.1, 0.5), (0.2,)):
        with pytest.raises(ValueError, match="start density range"):
            m.random_state(2, g, visible_density=bad)
    with pytest.raises(ValueError, match="Gaussian visible units"):
        GRBM(4, 3).random_state(2, g, visible_density=(0.2, 0.4))
    # the trained protocol carries it; a data start drops it; the CLI parses and checks it
    spec = trained_sampling(hparams(negative=Mixture(FromNoise(20, density=[0.3, 0.7]), Persistent())))
    assert spec.noise_density == (0.3, 0.7) and "noise_density=(0.3, 0.7)" in spec.describe()
    x, _ = draw(RBM(6, 4), 7, spec, generator=g)
    assert x.shape == (7, 6)
    with pytest.raises(ValueError, match="density of a noise start"):
        SamplingSpec(start="data", noise_density=(0.3, 0.7))
    p = argparse.ArgumentParser()
    add_sampling_arguments(p)
    hp = hparams(negative=FromNoise(20, density=[0.3, 0.7]))
    assert spec_from_arguments(p.parse_args([]), hp).noise_density == (0.3, 0.7)
    assert spec_from_arguments(p.parse_args(["--start", "data"]), hp).noise_density is None
    assert spec_from_arguments(p.parse_args(["--noise-density", "0.5,0.5"]), hp).noise_density == (0.5, 0.5)
    with pytest.raises(SystemExit):
        p.parse_args(["--noise-density", "0.7,0.3"])
