"""CelebA data module on a tiny folder in torchvision's CelebA layout (download=False):
centre crop 140 + resize checked against PIL directly, splits, greyscale, cache reuse."""

import numpy as np
import pytest
import torch
from PIL import Image

from qidbm.data import CelebADataModule, DataNotFoundError
from qidbm.data import datamodules as dmod
from qidbm.data.testing import make_celeba_folder


def pil_oracle(path, size, grey=False):
    """Centre crop 140 of a 178x218 image: left (178-140)/2 = 19, top (218-140)/2 = 39."""
    img = Image.open(path).convert("RGB").crop((19, 39, 159, 179)).resize((size, size), Image.BILINEAR)
    if grey:
        img = img.convert("L")
    a = np.asarray(img)
    a = a[None] if grey else a.transpose(2, 0, 1)
    return torch.from_numpy(a.copy())


@pytest.fixture
def celeba(tmp_path):
    files = make_celeba_folder(tmp_path / "src")
    return tmp_path / "src", tmp_path / "cache", files


@pytest.mark.parametrize("size", [32, 64])
def test_crop_resize_and_splits(celeba, size):
    root, cache, files = celeba
    dm = CelebADataModule(root=str(root), cache_dir=str(cache), download=False, image_size=size, batch_size=2)
    assert dm.image_shape == (3, size, size) and dm.n_visible == 3 * size * size
    dm.setup()
    train, test = dm.split_pixels("train"), dm.split_pixels("test")
    assert train.dtype == torch.uint8 and train.shape == (6, 3, size, size) and test.shape == (3, 3, size, size)
    for got, path in zip(train, files["train"]):
        assert torch.equal(got, pil_oracle(path, size))
    for got, path in zip(test, files["test"]):
        assert torch.equal(got, pil_oracle(path, size))
    info = dm.data_info()
    assert info["dataset"] == "CelebA" and info["image_shape"] == [3, size, size]
    assert info["preprocessing"] == f"center_crop_140_resize_{size}_bilinear"
    b = next(iter(dm.train_dataloader()))
    assert b.shape == (2, 3 * size * size) and set(b.unique().tolist()) <= {0.0, 1.0}
    assert len(dm.train_dataloader()) == 3


def test_grayscale_bitplanes(celeba):
    root, cache, files = celeba
    dm = CelebADataModule(root=str(root), cache_dir=str(cache), download=False, grayscale=True, encoding="bitplanes", batch_size=3)
    assert dm.n_visible == 8 * 32 * 32
    for got, path in zip(dm.split_pixels("test"), files["test"]):
        assert torch.equal(got, pil_oracle(path, 32, grey=True))
    ref = dm.test_images()
    assert ref.shape == (3, 1, 32, 32)
    assert torch.equal(ref, dm.split_pixels("test").float() / 255)  # bit planes are lossless


def test_continuous_rgb_normalisation(celeba):
    root, cache, _ = celeba
    dm = CelebADataModule(root=str(root), cache_dir=str(cache), download=False, encoding="continuous", batch_size=3)
    norm = dm.data_info()["normalization"]
    assert norm["kind"] == "pixel" and len(norm["mean"]) == 3 * 32 * 32
    x = dm.split_pixels("train").double() / 255
    np.testing.assert_allclose(norm["mean"], x.reshape(6, -1).mean(0).numpy(), atol=1e-12)
    torch.testing.assert_close(dm.test_images(), dm.split_pixels("test").float() / 255, rtol=0, atol=1e-6)


def test_processed_tensor_is_cached(celeba, monkeypatch):
    root, cache, _ = celeba
    first = CelebADataModule(root=str(root), cache_dir=str(cache), download=False)
    first.prepare_data()
    assert len(list((cache / "CelebA" / "processed").glob("*.pt"))) == 2  # train and test
    pixels = first.split_pixels("train")

    def no_decoding(*a, **k):
        raise AssertionError("images decoded again despite the cache")

    monkeypatch.setattr(dmod, "_CelebAFolder", no_decoding)
    again = CelebADataModule(root=str(root), cache_dir=str(cache), download=False)
    assert torch.equal(again.split_pixels("train"), pixels)
    # another size is another cache entry, so it must decode (and here it cannot)
    with pytest.raises(AssertionError, match="decoded again"):
        CelebADataModule(root=str(root), cache_dir=str(cache), download=False, image_size=64).setup()


def test_missing_files_name_both_fixes(celeba):
    root, cache, _ = celeba
    (root / "celeba" / "list_bbox_celeba.txt").unlink()
    with pytest.raises(DataNotFoundError) as e:
        CelebADataModule(root=str(root), cache_dir=str(cache), download=False).setup()
    msg = str(e.value)
    assert "lacks list_bbox_celeba.txt" in msg and "QIDBM_DATA_DIR" in msg and "download=True" in msg


def test_offline_download_failure(tmp_path, monkeypatch):
    import torchvision

    def offline(self):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets.CelebA, "download", offline)
    with pytest.raises(DataNotFoundError, match=r"downloading failed \(RuntimeError: no network\).*Two ways"):
        CelebADataModule(root=str(tmp_path / "none"), cache_dir=str(tmp_path / "c"), download=True).setup()


def test_torchvision_md5_check_is_what_we_relax(celeba):
    """torchvision 0.29 rejects the tiny folder (md5 of the annotation files); our subclass
    accepts the same layout. If torchvision stops checking md5s this test says so."""
    import torchvision

    root, _, _ = celeba
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        torchvision.datasets.CelebA(str(root), split="train", target_type=[], download=False)
    assert len(dmod._CelebAFolder(str(root), split="train", target_type=[], download=False)) == 6
