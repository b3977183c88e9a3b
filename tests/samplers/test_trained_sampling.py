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
