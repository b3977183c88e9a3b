"""Encodings: exact round trips, the documented bit order, normalisation against a float64
numpy oracle, JSON-ability of ``info``, and the errors ``validate`` raises."""

import json

import numpy as np
import pytest
import torch

from qidbm.data.encodings import (
    BIT_ORDER,
    Encoder,
    compute_normalization,
    decode,
    encode,
    encode_uint8,
    make_info,
    n_visible_for,
    validate,
    validate_images,
    validate_info,
)

SHAPE = [1, 28, 28]


def all_bytes_images():
    """Every 8-bit value, several times, as [N, 1, 28, 28]: 784 = 3*256 + 16."""
    v = torch.arange(784) % 256
    imgs = torch.stack([v.roll(k) for k in range(5)]).to(torch.uint8)
    return imgs.view(5, 1, 28, 28)


def info(encoding, norm=None):
    return make_info("MNIST", encoding, SHAPE, norm)


def test_n_visible():
    assert n_visible_for("binary", SHAPE) == 784
    assert n_visible_for("continuous", SHAPE) == 784
    assert n_visible_for("bitplanes", SHAPE) == 6272
    assert n_visible_for("bitplanes", [3, 32, 32]) == 24576
    with pytest.raises(ValueError, match="unknown encoding"):
        n_visible_for("gray", SHAPE)


def test_binary_threshold():
    b = all_bytes_images()
    x = encode(b.float() / 255, info("binary"))
    assert x.dtype == torch.float32 and x.shape == (5, 784)
    # x > 0.5  <=>  b >= 128 (127/255 = 0.498, 128/255 = 0.502)
    assert torch.equal(x, (b.view(5, -1) >= 128).float())
    assert torch.equal(encode(b, info("binary")), x)  # uint8 path agrees with the float path
    edge = torch.tensor([0.5, 0.5 + 1e-7, 0.4999]).view(1, 1, 1, 3).expand(1, 1, 28, 3)
    e = make_info("t", "binary", [1, 28, 3])
    assert encode(edge, e)[0, :3].tolist() == [0.0, 1.0, 0.0]
    # decode of binary samples is the identity onto images
    assert torch.equal(decode(x, info("binary")), x.view(5, 1, 28, 28))


def test_bitplanes_exact_round_trip_all_values():
    b = all_bytes_images()
    inf = info("bitplanes")
    x = encode(b.float() / 255, inf)
    assert x.shape == (5, 6272) and set(x.unique().tolist()) == {0.0, 1.0}
    back = decode(x, inf)
    assert torch.equal(torch.round(back * 255).to(torch.uint8), b)
    # exact in float64: sum_k 2^k bit_k / 255 == b / 255 to the last bit
    back64 = decode(x.double(), inf)
    assert back64.dtype == torch.float64
    assert torch.equal(back64, b.double() / 255)
    assert torch.equal(encode_uint8(b, inf), x)


def test_bitplanes_documented_order():
    inf = info("bitplanes")
    assert inf["bit_order"] == BIT_ORDER == "plane_major_lsb_first"
    img = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    img.view(-1)[5] = 0b1010_0001  # bits 0, 5, 7 of pixel 5
    x = encode(img, inf)[0]
    on = torch.nonzero(x).flatten().tolist()
    assert on == [0 * 784 + 5, 5 * 784 + 5, 7 * 784 + 5]  # unit k*D + p
    # plane 7 (MSB) viewed as an image is (b >= 128)
    b = all_bytes_images()
    planes = encode(b, inf).view(5, 8, 1, 28, 28)
    assert torch.equal(planes[:, 7], (b >= 128).float())
    assert torch.equal(planes[:, 0], (b % 2).float())


def test_bitplanes_decode_of_probabilities_is_expectation():
    inf = info("bitplanes")
    p = torch.rand(3, 6272, dtype=torch.float64)
    got = decode(p, inf).view(3, -1)
    want = sum(2.0**k * p[:, k * 784 : (k + 1) * 784] for k in range(8)) / 255
    torch.testing.assert_close(got, want.clamp(0, 1), rtol=0, atol=1e-15)


def numpy_stats(b, floor):
    x = b.reshape(len(b), -1).astype(np.float64) / 255
    return x.mean(0), np.maximum(x.std(0), floor), x.mean(), max(x.std(), floor)


def test_compute_normalization_matches_numpy():
    rng = np.random.default_rng(3)
    b = rng.integers(0, 256, (100, 1, 28, 28)).astype(np.uint8)
    b[:, 0, 0, 0] = 0  # a constant pixel: std 0 -> floor
    m, s, gm, gs = numpy_stats(b, 0.01)
    pix = compute_normalization(torch.from_numpy(b), "pixel", 0.01)
    np.testing.assert_allclose(pix["mean"], m, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pix["std"], s, rtol=0, atol=1e-12)
    assert pix["std"][0] == 0.01 and pix["std_floor"] == 0.01
    glob = compute_normalization(torch.from_numpy(b).float() / 255, "global", 0.01)
    np.testing.assert_allclose(glob["mean"], [gm], rtol=1e-6)
    np.testing.assert_allclose(glob["std"], [gs], rtol=1e-6)
    assert compute_normalization(torch.from_numpy(b), "none")["mean"] is None


@pytest.mark.parametrize("kind", ["pixel", "global", "none"])
def test_continuous_round_trip_and_formula(kind):
    b = all_bytes_images()
    norm = compute_normalization(b, kind, 0.01)
    inf = info("continuous", norm)
    x01 = b.float() / 255
    v = encode(x01, inf)
    if kind == "none":
        assert torch.equal(v, x01.view(5, -1))
    else:
        mean = torch.tensor(norm["mean"], dtype=torch.float32)
        std = torch.tensor(norm["std"], dtype=torch.float32)
        torch.testing.assert_close(v, (x01.view(5, -1) - mean) / std, rtol=0, atol=0)
    torch.testing.assert_close(decode(v, inf), x01, rtol=0, atol=1e-6)
    # decode clips Gaussian samples into [0, 1]
    out = decode(v + 100 * torch.randn_like(v), inf)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("encoding", ["binary", "bitplanes", "continuous"])
def test_info_is_json_and_decodes_without_data(encoding):
    b = all_bytes_images()
    norm = compute_normalization(b, "pixel", 0.01) if encoding == "continuous" else None
    inf = info(encoding, norm)
    back = json.loads(json.dumps(inf))  # what a checkpoint stores
    assert back == inf
    x = encode(b, inf)
    assert torch.equal(decode(x, back), decode(x, inf))
    assert torch.equal(Encoder(back).encode(b), x)


def test_validate_info_catches_inconsistency():
    inf = info("bitplanes")
    with pytest.raises(ValueError, match="n_visible"):
        validate_info({**inf, "n_visible": 784})
    with pytest.raises(ValueError, match="missing keys"):
        validate_info({"encoding": "binary"})
    with pytest.raises(ValueError, match="takes no normalisation"):
        make_info("MNIST", "binary", SHAPE, {"kind": "pixel", "mean": [0.0] * 784, "std": [1.0] * 784})
    with pytest.raises(ValueError, match="list of 784 floats"):
        make_info("MNIST", "continuous", SHAPE, {"kind": "pixel", "mean": [0.0], "std": [1.0]})
    with pytest.raises(ValueError, match="bit_order"):
        validate_info({**inf, "bit_order": "pixel_major"})


def test_validate_accepts_good_batches():
    b = all_bytes_images()
    for enc in ("binary", "bitplanes"):
        validate(encode(b, info(enc)), info(enc))
    inf = info("continuous", compute_normalization(b, "pixel"))
    validate(encode(b, inf), inf)


def test_validate_errors_say_what_to_do():
    b = all_bytes_images()
    ib, ibp = info("binary"), info("bitplanes")
    with pytest.raises(ValueError, match=r"got 8-bit values in \[0, 255\].*encoding='binary'.*'bitplanes'"):
        validate(b.view(5, -1).float(), ib)
    with pytest.raises(ValueError, match=r"8-bit values in \[0, 255\]"):
        validate(b.view(5, -1), ib)  # uint8 tensor
    with pytest.raises(ValueError, match=r"image shape.*encode\(images, info\)"):
        validate(b.float() / 255, ib)
    with pytest.raises(ValueError, match="784 columns.*n_visible = 6272.*8 units per pixel"):
        validate(encode(b, ib), ibp)
    with pytest.raises(ValueError, match="6272 columns.*looks bit-plane encoded"):
        validate(encode(b, ibp), ib)
    with pytest.raises(ValueError, match=r"needs values in \{0, 1\}.*greyscale pixels or probabilities"):
        validate(b.view(5, -1).float() / 255, ib)
    with pytest.raises(ValueError, match=r"values in \[-1, 2\].*encoding='continuous'"):
        validate(torch.tensor([[-1.0, 2.0] + [0.0] * 782]), ib)
    bad = encode(b, ib)
    bad[2, 7] = float("nan")
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite values \(1 NaN, 1 inf; x\[2, 7\]"):
        validate(bad, ib)
    with pytest.raises(ValueError, match="must be 2-D"):
        validate(torch.zeros(784), ib)
    with pytest.raises(ValueError, match="torch.Tensor"):
        validate(np.zeros((2, 784)), ib)


def test_validate_images_errors():
    ib = info("binary")
    with pytest.raises(ValueError, match=r"8-bit values in \[0, 255\].*divide by 255"):
        encode(torch.full((2, 1, 28, 28), 200.0), ib)
    with pytest.raises(ValueError, match="add the channel axis"):
        encode(torch.zeros(2, 28, 28), ib)
    with pytest.raises(ValueError, match=r"shape \[N, 1, 28, 28\]"):
        validate_images(torch.zeros(2, 3, 28, 28), ib)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        encode(torch.full((2, 1, 28, 28), -0.5), ib)
    with pytest.raises(ValueError, match="non-finite"):
        encode(torch.full((2, 1, 28, 28), float("nan")), ib)
    with pytest.raises(ValueError, match="decode expects visibles of shape"):
        decode(torch.zeros(2, 784), info("bitplanes"))
