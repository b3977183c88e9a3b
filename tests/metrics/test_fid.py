"""Tests for qidbm.metrics.fid.

Oracles: closed forms and an eigen-decomposition route for the Frechet distance,
numpy's mean/cov for the float64 accumulator, and pytorch-fid's own pipeline
(PNG files -> ``calculate_activation_statistics`` -> ``calculate_frechet_distance``
with pytorch-fid's own ``InceptionV3`` loaded by its own hub mechanism) for the
end-to-end FID. Tests that need the Inception weights skip when the file is absent.
"""

from __future__ import annotations

import os
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from qidbm.metrics import inception as F
from qidbm.metrics import (
    FID_WEIGHTS_ENV,
    FID_WEIGHTS_FILENAME,
    FIDAccumulator,
    FIDWeightsError,
    build_fid_inception,
    compute_fid,
    frechet_distance,
    prepare_images,
    reference_stats,
    reference_stats_path,
    weights_identity,
)

REPO = Path(__file__).resolve().parents[2]


def _find_weights() -> Path | None:
    env = os.environ.get(FID_WEIGHTS_ENV, "")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "fid" / FID_WEIGHTS_FILENAME]:
        if cand.is_file():
            return cand
    return None


WEIGHTS = _find_weights()
needs_weights = pytest.mark.skipif(
    WEIGHTS is None,
    reason=f"FID Inception weights not found (set {FID_WEIGHTS_ENV} or provide ../shared/fid/{FID_WEIGHTS_FILENAME})",
)


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch, tmp_path):
    """No test may see the caller's weights/cache settings or download anything."""
    monkeypatch.delenv(FID_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("QIDBM_CACHE_DIR", str(tmp_path / "qidbm_cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home_empty"))

    import pytorch_fid.inception as pfi

    real_loader = pfi.load_state_dict_from_url

    def _no_download(url, *args, **kwargs):
        # pytorch-fid's cache lookup still works; only a real download is refused
        if (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).is_file():
            return real_loader(url, *args, **kwargs)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(pfi, "load_state_dict_from_url", _no_download)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """One BLAS/OpenMP thread: on a shared 2-core machine, 2-thread LAPACK/oneDNN calls stall
    on descheduled threads (measured: 2048-d eigh 26 s with 2 threads vs 3.8 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn (dev extra)
        yield
    else:
        with threadpool_limits(limits=1):
            yield
    torch.set_num_threads(threads)


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# --------------------------------------------------------------------------- #
# frechet_distance
# --------------------------------------------------------------------------- #
def test_frechet_distance_identical_stats_is_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=5), _random_spd(rng, 5)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9 * np.trace(s)


def test_frechet_distance_1d_closed_form():
    # d^2 = (m1 - m2)^2 + (s1 - s2)^2 for N(m1, s1^2), N(m2, s2^2)
    m1, s1, m2, s2 = 0.3, 1.7, -1.1, 0.4
    expected = (m1 - m2) ** 2 + (s1 - s2) ** 2
    got = frechet_distance(np.array([m1]), np.array([[s1**2]]), np.array([m2]), np.array([[s2**2]]))
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_symmetric_sqrt_route():
    # Tr (S1 S2)^(1/2) = Tr (S1^(1/2) S2 S1^(1/2))^(1/2): an independent, eigh-only computation
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    r1 = _sqrtm_psd(s1)
    tr_sqrt = np.trace(_sqrtm_psd(r1 @ s2 @ r1))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2, method="eigh") == pytest.approx(expected, rel=1e-9)
    # diagonal covariances: sum_i (m1_i - m2_i)^2 + (sqrt(a_i) - sqrt(b_i))^2
    a, b = rng.uniform(0.5, 2, size=d), rng.uniform(0.5, 2, size=d)
    exp_diag = np.sum((mu1 - mu2) ** 2 + (np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exp_diag, rel=1e-10)
    # torch tensors are accepted and give the same number
    got_t = frechet_distance(*(torch.as_tensor(x, dtype=torch.float32) for x in (mu1, s1, mu2, s2)))
    assert got_t == pytest.approx(expected, rel=1e-4)


def test_frechet_distance_equals_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(2)
    for d in (5, 64):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # its sqrtm(disp=False)
            try:
                ref = calculate_frechet_distance(mu1, s1, mu2, s2)
            except TypeError as e:  # SciPy >= 1.18 removed sqrtm's `disp`, which pytorch-fid 0.3 passes
                if "disp" not in str(e):
                    raise
                ref = None
        # the definition itself, with SciPy's matrix square root: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))
        import scipy.linalg

        direct = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
                       - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-9)
        if ref is not None:
            assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-12)


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="equal length"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="covariance"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="finite"):
        frechet_distance(np.array([np.nan]), np.eye(1), np.zeros(1), np.eye(1))


# --------------------------------------------------------------------------- #
# images
# --------------------------------------------------------------------------- #
def test_prepare_images_grey_uint8_and_errors():
    g = torch.rand(4, 1, 5, 5)
    out = prepare_images(g)
    assert out.shape == (4, 3, 5, 5) and torch.equal(out[:, 0], out[:, 2]) and torch.equal(out[:, 1], g[:, 0])
    assert prepare_images(g[:, 0]).shape == (4, 3, 5, 5)  # [N, H, W] is grey
    u = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    assert torch.equal(prepare_images(u)[0, 0, 0], torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prepare_images(g * 2 - 1)
    with pytest.raises(ValueError, match="view"):
        prepare_images(torch.rand(4, 784))
    with pytest.raises(ValueError, match="C in"):
        prepare_images(torch.rand(4, 2, 5, 5))
    with pytest.raises(TypeError):
        prepare_images(torch.zeros(2, 1, 3, 3, dtype=torch.int64))


# --------------------------------------------------------------------------- #
# accumulator (fast: injected feature extractor)
# --------------------------------------------------------------------------- #
class _ToyFeatures(torch.nn.Module):
    """Deterministic nonlinear map [B, 3, H, W] -> [B, D], standing in for Inception."""

    def __init__(self, hw: int = 8, d: int = 12, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(3 * hw * hw, d, generator=g) / hw

    def forward(self, x):
        return torch.tanh(x.flatten(1) @ self.w) * 3.0 + 100.0  # large offset stresses the float64 sums


def test_accumulator_moments_equal_numpy():
    toy, seen = _ToyFeatures(), []

    def recording(x):  # records exactly the float32 features the accumulator receives
        out = toy(x)
        seen.append(out.clone())
        return out

    imgs = torch.rand(53, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    acc = FIDAccumulator(feature_extractor=recording, batch_size=7, device="cpu")  # uneven last batch
    acc.update(imgs)
    mu, sigma = acc.compute_stats()
    assert [len(f) for f in seen] == [7] * 7 + [4]
    feats = torch.cat(seen).double().numpy()
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-13, atol=0)
    # one-pass sums lose ~log10(mean^2 / var) digits to cancellation: 1e-9 relative here
    ref_cov = np.cov(feats, rowvar=False)
    np.testing.assert_allclose(sigma, ref_cov, rtol=0, atol=1e-9 * np.abs(ref_cov).max())
    assert acc.num_samples == 53
    # an iterable of batches (split 20 + 33, then by 7) works the same; reset forgets everything
    seen.clear()
    acc.reset().update(iter([imgs[:20], imgs[20:]]))
    assert [len(f) for f in seen] == [7, 7, 6, 7, 7, 7, 7, 5]
    mu2, sigma2 = acc.compute_stats()
    feats2 = torch.cat(seen).double().numpy()
    np.testing.assert_allclose(mu2, feats2.mean(0), rtol=1e-13)
    np.testing.assert_allclose(sigma2, np.cov(feats2, rowvar=False), rtol=0, atol=1e-9 * np.abs(ref_cov).max())
    acc.reset()
    with pytest.raises(RuntimeError, match="at least 2"):
        acc.compute_stats()


def test_accumulator_float64_features_direct():
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(300, 9)) * rng.uniform(0.1, 5, size=9) + 1e3
    acc = FIDAccumulator(feature_extractor=lambda x: x, device="cpu")
    for chunk in np.array_split(feats, 4):
        acc.update_features(torch.from_numpy(chunk))
    mu, sigma = acc.compute_stats()
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-13)
    ref_cov = np.cov(feats, rowvar=False)  # offset 1e3 vs scale ~1: ~6 digits lost to cancellation
    np.testing.assert_allclose(sigma, ref_cov, rtol=0, atol=1e-8 * np.abs(ref_cov).max())
    with pytest.raises(ValueError, match="features"):
        acc.update_features(torch.zeros(3, 4))


def test_compute_fid_self_zero_and_matches_stats_injected():
    toy = _ToyFeatures(d=6)
    g = torch.Generator().manual_seed(7)
    a, b = torch.rand(64, 1, 8, 8, generator=g), torch.rand(64, 1, 8, 8, generator=g) ** 2
    acc = FIDAccumulator(feature_extractor=toy, batch_size=16, device="cpu")
    assert abs(compute_fid(a, a, accumulator=acc)) < 1e-8
    fa, fb = (toy(x.expand(-1, 3, -1, -1)).double().numpy() for x in (a, b))
    expected = frechet_distance(fb.mean(0), np.cov(fb, rowvar=False), fa.mean(0), np.cov(fa, rowvar=False))
    assert expected > 1e-3
    assert compute_fid(b, a, accumulator=acc) == pytest.approx(expected, rel=1e-9)
    stats = (fa.mean(0), np.cov(fa, rowvar=False))
    assert compute_fid(b, stats, accumulator=acc) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="backend"):
        compute_fid(b, stats, backend="tf", accumulator=acc)
    with pytest.raises(ValueError, match="reference images"):
        compute_fid(b, stats, backend="torchmetrics", accumulator=acc)


# --------------------------------------------------------------------------- #
# weights resolution and errors (no forward pass, no network)
# --------------------------------------------------------------------------- #
def _assert_names_both_fixes(exc: pytest.ExceptionInfo):
    msg = str(exc.value)
    assert FID_WEIGHTS_ENV in msg and "fid_weights" in msg and FID_WEIGHTS_FILENAME in msg
    assert "download" in msg


def test_missing_weights_file_raises_clear_error(tmp_path):
    with pytest.raises(FIDWeightsError, match="does not exist") as exc:
        build_fid_inception(tmp_path / "nope.pth")
    _assert_names_both_fixes(exc)


def test_env_var_pointing_nowhere_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(FID_WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(FIDWeightsError, match=FID_WEIGHTS_ENV) as exc:
        FIDAccumulator(device="cpu")
    _assert_names_both_fixes(exc)


def test_wrong_shape_or_foreign_weights_raise_clear_error(tmp_path):
    keys = F._fid_inception_architecture().state_dict().keys()
    bad = tmp_path / "bad_shapes.pth"
    torch.save({k: torch.zeros(1) for k in keys}, bad)  # all keys, wrong shapes
    with pytest.raises(FIDWeightsError, match="keys or shapes") as exc:
        build_fid_inception(bad)
    _assert_names_both_fixes(exc)
    partial = tmp_path / "partial.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, partial)  # missing keys
    with pytest.raises(FIDWeightsError, match="keys or shapes"):
        build_fid_inception(partial)
    not_sd = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_sd)
    with pytest.raises(FIDWeightsError, match="not a state dict"):
        build_fid_inception(not_sd)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(FIDWeightsError, match="Could not read"):
        build_fid_inception(garbage)


def test_failed_download_raises_clear_error():
    # no weights_path, no env var, empty TORCH_HOME, download disabled (autouse fixture)
    with pytest.raises(FIDWeightsError, match="could not load or download") as exc:
        build_fid_inception()
    _assert_names_both_fixes(exc)
    assert "URLError" in str(exc.value)


def test_weights_identity_distinguishes_files(tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(b"x" * 10)
    b.write_bytes(b"y" * 10)  # same size, different content
    assert weights_identity(a) != weights_identity(b)
    key = {"dataset": "mnist", "split": "test", "encoding": "binary"}
    assert reference_stats_path(key, tmp_path, a) != reference_stats_path(key, tmp_path, b)


# --------------------------------------------------------------------------- #
# with the real weights
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def inception_acc():
    if WEIGHTS is None:
        pytest.skip(f"FID Inception weights not found (set {FID_WEIGHTS_ENV} or provide ../shared/fid/)")
    return FIDAccumulator(WEIGHTS, batch_size=50, device="cpu")


@needs_weights
def test_env_var_and_pytorch_fid_hub_mechanism_load_same_network(tmp_path, monkeypatch, inception_acc):
    # env var route
    monkeypatch.setenv(FID_WEIGHTS_ENV, str(WEIGHTS))
    via_env = build_fid_inception()
    ref_sd = inception_acc.model.state_dict()
    assert all(torch.equal(v, ref_sd[k]) for k, v in via_env.state_dict().items())
    # pytorch-fid's own mechanism: a file of the expected name in $TORCH_HOME/hub/checkpoints
    monkeypatch.delenv(FID_WEIGHTS_ENV)
    ckpt = tmp_path / "th" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / FID_WEIGHTS_FILENAME).symlink_to(WEIGHTS)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    via_hub = build_fid_inception()
    assert list(via_hub.state_dict()) == list(ref_sd)
    assert all(torch.equal(v, ref_sd[k]) for k, v in via_hub.state_dict().items())
    assert weights_identity() == weights_identity(WEIGHTS)


@needs_weights
def test_reference_stats_cache_written_once_and_keyed(tmp_path, monkeypatch, inception_acc):
    g = torch.Generator().manual_seed(11)
    imgs = (torch.rand(2, 1, 28, 28, generator=g) > 0.5).float()
    calls = []

    def images_fn():
        calls.append(1)
        return imgs

    key = {"dataset": "mnist", "split": "test", "encoding": "binary"}
    cache = tmp_path / "fidcache"
    mu, sigma = reference_stats(key, images_fn, cache, accumulator=inception_acc)
    assert len(calls) == 1 and mu.shape == (2048,) and sigma.shape == (2048, 2048)
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 1 and "dataset=mnist" in files[0].name
    assert files[0] == reference_stats_path(dict(reversed(list(key.items()))), cache, WEIGHTS)  # order-free key
    with np.load(files[0]) as z:
        assert str(z["weights"]) == weights_identity(WEIGHTS) and "binary" in str(z["key"]) and int(z["n"]) == 2

    def must_not_run():
        raise AssertionError("images_fn called although the stats are cached")

    mu2, sigma2 = reference_stats(dict(key), must_not_run, cache, weights_path=WEIGHTS)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    # a different key (encoding) is a different file and is computed
    other = dict(key, encoding="bitplanes")
    mu3, _ = reference_stats(other, lambda: imgs.flip(-1), cache, accumulator=inception_acc)
    assert len(sorted(cache.glob("*.npz"))) == 2 and not np.array_equal(mu3, mu)
    # a corrupt cache file is recomputed, not trusted
    files[0].write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        mu4, _ = reference_stats(key, images_fn, cache, accumulator=inception_acc)
    assert len(calls) == 2
    np.testing.assert_allclose(mu4, mu, rtol=1e-12)
    assert not list(cache.glob("*.tmp"))
    # default cache dir from $QIDBM_CACHE_DIR
    monkeypatch.setenv("QIDBM_CACHE_DIR", str(tmp_path / "envcache"))
    reference_stats("mnist-test-binary", lambda: imgs, accumulator=inception_acc)
    assert len(list((tmp_path / "envcache" / "fid").glob("mnist-test-binary__*.npz"))) == 1


@needs_weights
def test_reference_stats_waits_for_a_build_in_progress(tmp_path, inception_acc):
    """While another process holds the statistics' lock, a second caller waits and then reads its
    file instead of computing the same statistics again."""
    import shutil
    import threading

    from filelock import FileLock

    imgs = (torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(5)) > 0.5).float()
    key = {"dataset": "mnist", "split": "test", "encoding": "binary"}
    built = tmp_path / "built"
    mu, _ = reference_stats(key, lambda: imgs, built, accumulator=inception_acc)
    cache = tmp_path / "shared"
    target = reference_stats_path(key, cache, WEIGHTS)
    cache.mkdir()
    result, calls = {}, []

    def second_caller():
        result["mu"] = reference_stats(key, lambda: calls.append(1) or imgs, cache, accumulator=inception_acc)[0]

    with FileLock(f"{target}.lock"):  # the first process, still computing
        t = threading.Thread(target=second_caller)
        t.start()
        t.join(timeout=2.0)
        assert t.is_alive()  # it waits for the lock
        shutil.copy(next(built.glob("*.npz")), target)  # the first process's file lands
    t.join(timeout=60)
    assert not t.is_alive() and calls == []
    np.testing.assert_array_equal(result["mu"], mu)


def _pytorch_fid_reference(tmp_path, sets, monkeypatch):
    """pytorch-fid's own pipeline: PNG files, its InceptionV3 loaded via its hub mechanism."""
    from PIL import Image
    from pytorch_fid.fid_score import calculate_activation_statistics
    from pytorch_fid.inception import InceptionV3

    ckpt = tmp_path / "th" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / FID_WEIGHTS_FILENAME).symlink_to(WEIGHTS)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    stats = []
    for s, imgs in enumerate(sets):
        files = []
        for i, img in enumerate(imgs):
            p = tmp_path / f"set{s}_{i:04d}.png"
            Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8), mode="L").save(p)
            files.append(str(p))
        stats.append(calculate_activation_statistics(files, model, batch_size=50, dims=2048, device="cpu",
                                                     num_workers=0))
    return stats


def _two_image_sets(n: int):
    g = torch.Generator().manual_seed(2024)
    # uint8-exact values so the PNG round trip is lossless; two different distributions
    a = torch.randint(0, 256, (n, 1, 28, 28), generator=g).float() / 255
    blobs = torch.nn.functional.avg_pool2d(torch.rand(n, 1, 28, 28, generator=g), 5, 1, 2)
    b = torch.round(blobs.clamp(0, 1) * 255) / 255
    return a, b


@needs_weights
def test_fid_equals_pytorch_fid_pipeline_small(tmp_path, monkeypatch, inception_acc):
    """Fast version: 2 x 10 images; the 2048-d Frechet distances use the eigh route.

    (scipy's 2048-d sqrtm takes 20-90 s on a shared 2-core CPU; the sqrtm route is
    compared with pytorch-fid's own function in the slow test below and on 64-d above.)
    """
    a, b = _two_image_sets(10)
    (mu_a_ref, s_a_ref), (mu_b_ref, s_b_ref) = _pytorch_fid_reference(tmp_path, [a, b], monkeypatch)
    mu_a, s_a = inception_acc.reset().update(a).compute_stats()
    mu_b, s_b = inception_acc.reset().update(b).compute_stats()
    inception_acc.reset()
    for ours, ref in ((mu_a, mu_a_ref), (mu_b, mu_b_ref), (s_a, s_a_ref), (s_b, s_b_ref)):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)  # features are O(1): float32 round-off only
    fid_ref = frechet_distance(mu_b_ref, s_b_ref, mu_a_ref, s_a_ref, method="eigh")
    # one call, reference given as (mu, sigma) as reference_stats returns it
    fid_ours = compute_fid(b, (mu_a, s_a), accumulator=inception_acc, fd_method="eigh")
    assert fid_ref > 10.0  # the two sets really differ
    assert fid_ours == pytest.approx(fid_ref, rel=1e-3)


@needs_weights
@pytest.mark.slow
def test_fid_equals_pytorch_fid_pipeline_200(tmp_path, monkeypatch, inception_acc):
    """200 images (2 x 100), pytorch-fid's calculate_frechet_distance vs compute_fid (sqrtm)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    a, b = _two_image_sets(100)
    (mu_a_ref, s_a_ref), (mu_b_ref, s_b_ref) = _pytorch_fid_reference(tmp_path, [a, b], monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fid_ref = calculate_frechet_distance(mu_b_ref, s_b_ref, mu_a_ref, s_a_ref)
    assert fid_ref > 10.0
    ours = compute_fid(b, a, accumulator=inception_acc)
    print(f"\nFID 2x100 images: pytorch-fid pipeline {fid_ref:.6f}, qidbm {ours:.6f}, rel diff {(ours - fid_ref) / fid_ref:+.2e}")
    assert ours == pytest.approx(fid_ref, rel=1e-3)


@needs_weights
@pytest.mark.slow
def test_torchmetrics_backend_close(inception_acc):
    a, b = _two_image_sets(100)
    ours = compute_fid(b, a, accumulator=inception_acc)
    tm = compute_fid(b, a, backend="torchmetrics", weights_path=WEIGHTS, batch_size=50, device="cpu")
    print(f"\nFID 2x100 images: pytorch-fid backend {ours:.4f}, torchmetrics {tm:.4f}, rel diff {(tm - ours) / ours:+.2e}")
    # torchmetrics truncates to uint8 and scales by (x - 128) / 128 instead of 2x - 1
    assert tm == pytest.approx(ours, rel=0.03)
