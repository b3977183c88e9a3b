"""Benchmark distributions: exact probabilities, supports, errors and seeded sampling."""
import math

import pytest
import torch
from scipy import stats

from qidbm.exact import (
    BarsAndStripes,
    Cardinality,
    MixtureOfBernoulli,
    OnSquared,
    Parity,
    basis_bits,
    bits_to_index,
    get_distribution,
)


def test_supports_and_normalisation():
    cases = [
        (BarsAndStripes(4), 6),  # 2x2: 2^2 + 2^2 - 2
        (BarsAndStripes(9, rows=3, cols=3), 14),
        (BarsAndStripes(6, single_line=True), 5),  # 2 rows + 3 columns
        (OnSquared(5, seed=3), 25),
        (Cardinality(6), math.comb(6, 3)),
        (Parity(5), 16),
    ]
    for dist, k in cases:
        p = dist.probs()
        assert abs(float(p.sum()) - 1) < 1e-14
        assert int((p > 0).sum()) == k, dist
        assert torch.allclose(p[p > 0], torch.full((k,), 1 / k, dtype=torch.float64))


def test_bars_and_stripes_images():
    imgs = BarsAndStripes(6, single_line=True).images()
    assert sorted(int(i.sum()) for i in imgs) == [2, 2, 2, 3, 3]
    std = BarsAndStripes(6).images()  # 2x3: 4 stripes + 8 bars - 2 duplicates
    assert len(std) == 10
    for im in std:
        rows_equal = bool((im == im[:, :1]).all())
        cols_equal = bool((im == im[:1, :]).all())
        assert rows_equal or cols_equal


def test_parity_and_cardinality_content():
    bits = Parity(4).support()
    assert (bits.sum(-1) % 2 == 0).all()
    assert (Cardinality(4).support().sum(-1) == 2).all()


def test_mixture_of_bernoulli_formula():
    d = MixtureOfBernoulli(5, n_modes=3, p=0.8, seed=1)
    v = basis_bits(5)
    ref = torch.zeros(32, dtype=torch.float64)
    for mode in d.modes:
        ham = (v != mode).sum(-1).to(torch.float64)
        ref += 0.8 ** (5 - ham) * 0.2**ham / 3
    assert torch.allclose(d.probs(), ref, atol=1e-15)
    sharp = MixtureOfBernoulli(5, n_modes=3, p=1.0, seed=1).probs()
    assert torch.allclose(sharp[bits_to_index(d.modes)].sum(), torch.tensor(1.0, dtype=torch.float64))


def test_errors():
    with pytest.raises(ValueError, match="even n"):
        Cardinality(5)
    with pytest.raises(ValueError, match="n\\^2"):
        OnSquared(3)
    with pytest.raises(ValueError, match="even n"):
        BarsAndStripes(5)
    with pytest.raises(ValueError, match="rows \\* cols"):
        BarsAndStripes(6, rows=4, cols=2)
    with pytest.raises(ValueError, match="unknown distribution"):
        get_distribution("mnist", 4)


def test_seeded_sampling_is_reproducible_and_exact():
    d = MixtureOfBernoulli(4, n_modes=2, p=0.7, seed=5)
    a, b = d.sample(5000, seed=11), d.sample(5000, seed=11)
    assert torch.equal(a, b) and a.shape == (5000, 4) and a.dtype == torch.float64
    assert not torch.equal(a, d.sample(5000, seed=12))
    counts = torch.bincount(bits_to_index(a), minlength=16).to(torch.float64)
    res = stats.chisquare(counts.numpy(), (5000 * d.probs()).numpy())
    assert res.pvalue > 1e-3
    assert torch.isfinite(d.log_prob(a)).all()
    assert math.isinf(float(Parity(3).log_prob(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))))
