"""FID on torchmetrics' FrechetInceptionDistance gives the numbers of the former implementation.

Oracle: values printed by the former ``qidbm.metrics.fid`` (its own float64 accumulator,
before FID moved onto torchmetrics' state) on fixed float64 features, hard-coded below.
Also: torchmetrics' DDP reduction (a simulated second rank) enters the statistics, and
the feature module never leaves eval mode. No Inception weights needed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qidbm.metrics import FIDAccumulator, InceptionFeatures, InceptionFID, compute_fid, frechet_distance


def _features(seed: int, n: int, d: int, offset: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    return a * rng.uniform(0.2, 3.0, size=d) + offset


# (generated, reference) features; chunks fed in 3 (generated) and 4 (reference) uneven pieces
CASES = {
    "full_rank": (lambda: (_features(10, 257, 24, 5.0), _features(11, 311, 24, 5.3))),
    "singular": (lambda: (_features(12, 30, 40, 2.0), _features(13, 35, 40, 1.5))),  # n < d, as FID with few images
}
# former implementation (FIDAccumulator.update_features -> compute_stats -> frechet_distance), float64
FORMER = {
    "full_rank": dict(sqrtm=52.09705343391377, eigh=52.09705343389443, mu_g_sum=119.85435074722434,
                      tr_s_g=83.22435730710704, s_g01=0.6595841714563626, mu_r_sum=127.0260244085585,
                      tr_s_r=76.25864387284247),
    "singular": dict(sqrtm=141.55833464545591, eigh=141.55833471915707, mu_g_sum=78.12394111267075,
                     tr_s_g=126.7319540081566, s_g01=-1.504377279208345, mu_r_sum=58.56829062108195,
                     tr_s_r=143.20738409562534),
}
TOL = 1e-6


def _summary(mu_g, s_g, mu_r, s_r, method_values):
    return dict(method_values, mu_g_sum=mu_g.sum(), tr_s_g=np.trace(s_g), s_g01=s_g[0, 1], mu_r_sum=mu_r.sum(),
                tr_s_r=np.trace(s_r))


@pytest.mark.parametrize("case", list(CASES))
def test_accumulator_equals_former_implementation(case):
    g, r = CASES[case]()
    acc = FIDAccumulator(feature_extractor=lambda x: x, device="cpu")
    for c in np.array_split(g, 3):
        acc.update_features(torch.from_numpy(c))
    mu_g, s_g = acc.compute_stats()
    acc.reset()
    for c in np.array_split(r, 4):
        acc.update_features(torch.from_numpy(c))
    mu_r, s_r = acc.compute_stats()
    got = _summary(mu_g, s_g, mu_r, s_r, {m: frechet_distance(mu_g, s_g, mu_r, s_r, method=m) for m in ("sqrtm", "eigh")})
    for k, v in FORMER[case].items():
        assert abs(got[k] - v) <= TOL, (k, got[k], v)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_torchmetrics_metric_equals_former_implementation(case, method):
    g, r = CASES[case]()
    metric = InceptionFID(feature=InceptionFeatures(lambda x: x, g.shape[1]), fd_method=method)
    for c in np.array_split(g, 3):
        metric.update_features(torch.from_numpy(c), real=False)
    for c in np.array_split(r, 4):
        metric.update_features(torch.from_numpy(c), real=True)
    assert int(metric.fake_features_num_samples) == len(g) and int(metric.real_features_num_samples) == len(r)
    value = metric.compute()
    assert value.dtype == torch.float64
    assert abs(float(value) - FORMER[case][method]) <= TOL
    mu_g, s_g = metric.stats(real=False)
    mu_r, s_r = metric.stats(real=True)
    got = _summary(mu_g, s_g, mu_r, s_r, {})
    for k in ("mu_g_sum", "tr_s_g", "s_g01", "mu_r_sum", "tr_s_r"):
        assert abs(got[k] - FORMER[case][k]) <= TOL, k
    metric.reset()
    with pytest.raises(RuntimeError, match="at least 2"):
        metric.stats(real=True)


class _Toy(torch.nn.Module):
    def __init__(self, d: int = 6):
        super().__init__()
        self.w = torch.randn(3 * 8 * 8, d, generator=torch.Generator().manual_seed(0)) / 8
        self.bn = torch.nn.BatchNorm1d(d)  # must stay in eval mode (running statistics)

    def forward(self, x):
        return self.bn(torch.tanh(x.flatten(1) @ self.w) * 3.0)


def test_metric_on_images_equals_compute_fid_and_stays_in_eval_mode():
    g = torch.Generator().manual_seed(7)
    a, b = torch.rand(40, 1, 8, 8, generator=g), torch.rand(40, 1, 8, 8, generator=g) ** 2
    toy = _Toy().eval()
    metric = InceptionFID(feature=InceptionFeatures(toy, 6))
    metric.train()  # e.g. a LightningModule switching to training
    assert not toy.training and not metric.inception.training
    for i in range(0, 40, 16):
        metric.update(a[i : i + 16], real=True)
        metric.update(b[i : i + 16], real=False)
    expected = compute_fid(b, a, accumulator=FIDAccumulator(feature_extractor=toy, batch_size=16, device="cpu"))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-12)


def test_ddp_reduction_is_torchmetrics_sum_over_ranks():
    """A simulated second rank: the statistics are those of both ranks' features together."""
    g, r = CASES["full_rank"]()
    other = {}

    def fake_gather(t, group=None):  # torchmetrics' gather_all_tensors: this rank's tensor, then rank 1's
        return [t, other[id(t)]]

    def run(metric, gen, ref):
        metric.update_features(torch.from_numpy(gen), real=False)
        metric.update_features(torch.from_numpy(ref), real=True)
        return metric

    feature = InceptionFeatures(lambda x: x, g.shape[1])
    rank1 = run(InceptionFID(feature=feature), g[150:], r[160:])
    rank0 = run(InceptionFID(feature=feature, dist_sync_fn=fake_gather, distributed_available_fn=lambda: True),
                g[:150], r[:160])
    for name in rank0._defaults:
        other[id(getattr(rank0, name))] = getattr(rank1, name)
    single = run(InceptionFID(feature=feature), g, r)
    mu, sigma = rank0.stats(real=False)
    mu1, sigma1 = single.stats(real=False)
    np.testing.assert_allclose(mu, mu1, rtol=1e-13)
    np.testing.assert_allclose(sigma, sigma1, rtol=0, atol=1e-10 * np.abs(sigma1).max())
    assert int(rank0.fake_features_num_samples) == 150  # local state restored after the sync
    for name in rank0._defaults:
        other[id(getattr(rank0, name))] = getattr(rank1, name)
    assert float(rank0.compute()) == pytest.approx(FORMER["full_rank"]["sqrtm"], abs=TOL)


def test_accumulator_statistics_are_this_process_only():
    """FIDCallback and `qidbm evaluate` run the accumulator on rank 0 alone: it must never wait for a sync."""
    g, _ = CASES["full_rank"]()

    def no_gather(*args, **kwargs):
        raise AssertionError("FIDAccumulator tried to gather across processes")

    acc = FIDAccumulator(feature_extractor=lambda x: x, device="cpu").update_features(torch.from_numpy(g))
    acc.metric.distributed_available_fn = lambda: True
    acc.metric.dist_sync_fn = no_gather
    mu, sigma = acc.compute_stats()
    np.testing.assert_allclose(mu, g.mean(0), rtol=1e-13)
    assert abs(sigma.trace() - FORMER["full_rank"]["tr_s_g"]) <= TOL
