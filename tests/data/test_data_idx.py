"""IDX reader/writer/validator: round trips against torchvision's reader, and every failure
mode (truncated / corrupt gzip, bad magic, size mismatch) named with its file."""

import gzip
import os

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from qidbm.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    IDXError,
    decompress_idx,
    parse_idx_header,
    read_idx,
    validate_idx,
    write_idx,
)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (5, 3), (4, 6, 5)])
def test_write_read_round_trip_matches_torchvision(tmp_path, dtype, shape):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    p = write_idx(tmp_path / "a.idx", a)
    np.testing.assert_array_equal(read_idx(p), a)
    # torchvision's own reader is the independent oracle for the on-disk format (big-endian)
    tv = read_sn3_pascalvincent_tensor(str(p))
    np.testing.assert_array_equal(tv.numpy(), a)
    pg = write_idx(tmp_path / "a.idx.gz", a)
    np.testing.assert_array_equal(read_idx(pg), a)
    assert validate_idx(pg).shape == shape


def test_mnist_magic_numbers_on_disk(tmp_path):
    img = write_idx(tmp_path / "i", np.zeros((3, 28, 28), np.uint8))
    lab = write_idx(tmp_path / "l", np.zeros(3, np.uint8))
    assert img.read_bytes()[:8] == bytes([0, 0, 8, 3, 0, 0, 0, 3])
    assert int.from_bytes(img.read_bytes()[:4], "big") == IMAGES_MAGIC == 2051
    assert int.from_bytes(lab.read_bytes()[:4], "big") == LABELS_MAGIC == 2049
    h = validate_idx(img, expected_magic=IMAGES_MAGIC, expected_shape=(None, 28, 28))
    assert h.shape == (3, 28, 28) and h.header_size == 16 and h.data_size == 3 * 784


def _gz(tmp_path, n=50):
    a = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    return write_idx(tmp_path / "train-images-idx3-ubyte.gz", a)


def test_truncated_gzip_names_file(tmp_path):
    p = _gz(tmp_path)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(IDXError, match=r"train-images-idx3-ubyte\.gz: truncated gzip"):
        validate_idx(p)
    with pytest.raises(IDXError, match="truncated gzip"):
        read_idx(p)


def test_corrupt_gzip_names_file(tmp_path):
    p = _gz(tmp_path)
    data = bytearray(p.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 40):  # scribble over the deflate stream
        data[i] ^= 0x5A
    p.write_bytes(bytes(data))
    with pytest.raises(IDXError, match=r"train-images-idx3-ubyte\.gz: (corrupt|truncated) gzip"):
        validate_idx(p)


def test_crc_error_detected(tmp_path):
    p = _gz(tmp_path)
    data = bytearray(p.read_bytes())
    data[-8] ^= 0xFF  # the stored CRC32: the stream inflates fine, the check must fail
    p.write_bytes(bytes(data))
    with pytest.raises(IDXError, match="corrupt gzip"):
        validate_idx(p)


def test_not_gzip_at_all(tmp_path):
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(IDXError, match=r"t10k-images-idx3-ubyte\.gz: corrupt gzip"):
        validate_idx(p)


def test_bad_magic(tmp_path):
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"\x12\x34\x08\x01" + (5).to_bytes(4, "big") + bytes(5))
    with pytest.raises(IDXError, match=r"train-labels-idx1-ubyte\.gz: bad IDX magic number 0x12340801"):
        validate_idx(p)
    q = tmp_path / "x"
    q.write_bytes(b"\x00\x00\x07\x01" + bytes(8))  # unknown type code 7
    with pytest.raises(IDXError, match="bad IDX magic"):
        parse_idx_header(q.read_bytes(), q)


def test_gz_given_where_plain_expected(tmp_path):
    p = _gz(tmp_path)
    q = tmp_path / "train-images-idx3-ubyte"
    q.write_bytes(p.read_bytes())  # still compressed, but named as decompressed
    with pytest.raises(IDXError, match="must be decompressed first"):
        validate_idx(q)


def test_wrong_expected_magic_and_shape(tmp_path):
    lab = write_idx(tmp_path / "labels", np.zeros(4, np.uint8))
    with pytest.raises(IDXError, match="expected 0x00000803.*swapped"):
        validate_idx(lab, expected_magic=IMAGES_MAGIC)
    img = write_idx(tmp_path / "img", np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(IDXError, match=r"shape \[4, 32, 32\], expected \['\*', 28, 28\]"):
        validate_idx(img, expected_shape=(None, 28, 28))


@pytest.mark.parametrize("delta", [-1, -784, +3])
def test_size_mismatch(tmp_path, delta):
    p = write_idx(tmp_path / "train-images-idx3-ubyte", np.ones((4, 28, 28), np.uint8))
    data = p.read_bytes()
    p.write_bytes(data[:delta] if delta < 0 else data + bytes(delta))
    what = "truncated" if delta < 0 else "trailing bytes"
    with pytest.raises(IDXError, match=rf"train-images-idx3-ubyte: IDX size mismatch, file (has )?{what}"):
        validate_idx(p)
    with pytest.raises(IDXError, match="size mismatch"):
        read_idx(p)
    # also inside a gzip (header claims more than the stream holds)
    g = tmp_path / "g.gz"
    with gzip.open(g, "wb") as f:
        f.write(p.read_bytes())
    with pytest.raises(IDXError, match=r"g\.gz: IDX size mismatch"):
        validate_idx(g)


def test_missing_file(tmp_path):
    with pytest.raises(IDXError, match="not found"):
        validate_idx(tmp_path / "nope")


def test_decompress_is_atomic_and_validated(tmp_path):
    a = np.arange(2 * 28 * 28, dtype=np.int64).astype(np.uint8).reshape(2, 28, 28)
    src = write_idx(tmp_path / "src" / "f.gz", a)
    dst = tmp_path / "out" / "f"
    h = decompress_idx(src, dst, expected_magic=IMAGES_MAGIC, expected_shape=(None, 28, 28))
    assert h.shape == (2, 28, 28)
    assert torch.equal(read_sn3_pascalvincent_tensor(str(dst)), torch.from_numpy(a))
    # a bad source leaves neither a destination nor a temporary file behind
    bad = tmp_path / "src" / "bad.gz"
    bad.write_bytes(src.read_bytes()[:30])
    dst2 = tmp_path / "out" / "bad"
    with pytest.raises(IDXError, match=r"bad\.gz"):
        decompress_idx(bad, dst2)
    assert sorted(os.listdir(tmp_path / "out")) == ["f"]
    # the wrong kind of file is refused before it lands
    with pytest.raises(IDXError, match="expected 0x00000801"):
        decompress_idx(src, tmp_path / "out" / "g", expected_magic=LABELS_MAGIC)
    assert sorted(os.listdir(tmp_path / "out")) == ["f"]
