"""The sampling a checkpoint was trained for, and Taniguchi et al.'s sampler as an output option."""

import torch

from qidbm.models import DBM, QiDBM
from qidbm.samplers.drawing import SamplingSpec, draw, trained_sampling


def test_noise_started_training_is_sampled_the_same_way():
    spec = trained_sampling({"negative_start": "noise", "cd_steps": 20, "quantum_step": "exact"})
    assert (spec.start, spec.num_steps, spec.output, spec.quantum_step) == ("noise", 20, "sample", "exact")
    spec = trained_sampling({"negative_start": "noise", "cd_steps": 20}, gaussian_visible=True)
    assert (spec.num_steps, spec.output) == (20, "mean")
    spec = trained_sampling({"negative_start": "local_mode"})
    assert (spec.start, spec.num_steps, spec.output) == ("noise", 0, "local_search")
    assert trained_sampling({"negative_start": "persistent", "cd_steps": 5}) is None
    assert trained_sampling(None) is None


def test_local_search_output_is_a_visible_local_mode():
    for m in (DBM([6, 4, 3]), QiDBM([6, 4, 3], [1])):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 1, generator=g)
        x, _ = draw(m, 50, SamplingSpec(num_steps=0, output="local_search", batch_size=20), generator=g)
        assert x.shape == (50, 6) and set(x.unique().tolist()) <= {0.0, 1.0}


def test_mean_field_output_is_the_visible_mean_under_the_hidden_mean_field():
    """E[v | h = <h>_v] from the same chain's last visible sample, against the closed forms:
    <h> = sigmoid(b + W^T v / s^2) (GRBM), the qubit's <n> at the same field (QGRBM); E[v|h] = mu + W h."""
    from qidbm.models import GRBM, QGRBM
    from qidbm.quantum import qubit_prob_one

    for m in (GRBM(5, 3), QGRBM(5, 3)):
        m = m.double()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.7, generator=g)
        spec = dict(num_steps=3, start="noise", batch_size=40)
        v, _ = draw(m, 40, SamplingSpec(output="sample", **spec), generator=torch.Generator().manual_seed(7))
        out, _ = draw(m, 40, SamplingSpec(output="mean_field", **spec), generator=torch.Generator().manual_seed(7))
        phi = m.hidden_bias + (v / m.log_variance.exp()) @ m.weight
        h = torch.sigmoid(phi) if isinstance(m, GRBM) else qubit_prob_one(phi, m.transverse_parameter(1).expand_as(phi))
        torch.testing.assert_close(out, m.visible_bias + h @ m.weight.T, rtol=1e-10, atol=1e-10)
