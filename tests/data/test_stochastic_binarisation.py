"""Stochastic binarisation of MNIST-format data: a fixed seeded test set, training images redrawn
each epoch, recorded in data_info (on tiny generated IDX folders; one check on the real MNIST)."""

import math
import os
import pickle
from pathlib import Path

import pytest
import torch

from qidbm.data import FashionMNISTDataModule, MNISTDataModule, datamodule_from_info
from qidbm.data.batching import IndexBatch, IndexBatchSampler, StochasticBinaryBatchDataset
from qidbm.data.encodings import binarization_seed, stochastic_binarize
from qidbm.data.testing import make_idx_dataset
from qidbm.metrics import data_reference_key


@pytest.fixture
def root(tmp_path):
    make_idx_dataset(tmp_path / "data", "MNIST", 96, 40, seed=0)
    make_idx_dataset(tmp_path / "data", "FashionMNIST", 96, 40, seed=1)
    return dict(root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), download=False)


def grey_ramp(n):
    """n copies of one image whose 784 pixels take every value 0..255 (three times, and 0..15 once more)."""
    return (torch.arange(784) % 256).to(torch.uint8).view(1, 1, 28, 28).expand(n, -1, -1, -1).contiguous()


def test_stochastic_binarize_draws_each_pixel_with_its_intensity():
    n = 6000
    x = grey_ramp(n)
    out = stochastic_binarize(x, seed=1)
    assert out.dtype == torch.uint8 and set(out.unique().tolist()) <= {0, 255}
    assert torch.equal(out, stochastic_binarize(x, seed=1))  # the seed fixes the draw
    assert not torch.equal(out, stochastic_binarize(x, seed=2))
    p = x[0].flatten().double() / 255
    mean = (out.flatten(1).double() / 255).mean(0)
    assert torch.all(mean[p == 0] == 0) and torch.all(mean[p == 1] == 1)  # 0 stays 0, 255 stays 255
    inner = (p > 0) & (p < 1)
    z = (mean - p)[inner] / torch.sqrt(p * (1 - p) / n)[inner]
    assert z.abs().max() < 5  # every pixel's frequency matches its intensity (binomial z-scores)
    assert abs(z.pow(2).mean().item() - 1) < 0.15  # and the z-scores have unit variance, as independent draws
    # the chunking is part of the definition: a different chunk size gives other (equally valid) bits
    assert torch.equal(stochastic_binarize(x[:100], 1, chunk=4096), stochastic_binarize(x, 1)[:100])
    with pytest.raises(ValueError, match="uint8"):
        stochastic_binarize(x.float(), 0)


def test_seeds_are_distinct_per_split_and_epoch():
    seeds = {binarization_seed(0, "test"), binarization_seed(0, "val"), binarization_seed(1, "test"),
             *(binarization_seed(0, "train", e) for e in range(5))}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)
    assert binarization_seed(0, "test") == binarization_seed(0, "test")


@pytest.mark.parametrize("cls", [MNISTDataModule, FashionMNISTDataModule])
def test_fixed_test_set_is_reproducible_from_its_seed(root, cls):
    dm = cls(binarization="stochastic", binarize_seed=7, **root)
    test = dm.split_pixels("test")
    raw = cls(**root).split_pixels("test")
    assert torch.equal(test, stochastic_binarize(raw, binarization_seed(7, "test")))  # the documented draw
    # the same seed gives the same test set whatever the other settings; another seed another one
    other = cls(binarization="stochastic", binarize_seed=7, val_size=10, seed=3, batch_size=8, **root)
    assert torch.equal(other.split_pixels("test"), test)
    assert not torch.equal(cls(binarization="stochastic", binarize_seed=8, **root).split_pixels("test"), test)
    # FID compares against these images, and the test loader serves their bits
    assert torch.equal(dm.test_images(), test.float() / 255)
    served = torch.cat(list(dm.test_dataloader()))
    assert torch.equal(served, (test.flatten(1) > 0).float())


def test_training_images_are_redrawn_each_epoch_and_reproducible(root):
    dm = MNISTDataModule(binarization="stochastic", binarize_seed=5, batch_size=32, **root)
    loader = dm.train_dataloader()
    epochs = []
    for e in range(3):
        loader.sampler.set_epoch(e)
        epochs.append(torch.cat(list(loader)))
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    raw = MNISTDataModule(**root).split_pixels("train")
    # the bits are a draw from the intensities: never on where a pixel is 0, always where it is 255
    perm0 = loader.sampler
    perm0.set_epoch(1)
    idx = torch.cat([torch.tensor(b) for b in perm0])
    bits = epochs[1]
    flat = raw.flatten(1)[idx]
    assert torch.all(bits[flat == 0] == 0) and torch.all(bits[flat == 255] == 1)
    # the same epoch in a fresh module (a resumed run) draws the same bits, batch by batch
    again = MNISTDataModule(binarization="stochastic", binarize_seed=5, batch_size=32, **root).train_dataloader()
    again.sampler.set_epoch(1)
    assert torch.equal(torch.cat(list(again)), epochs[1])
    # and a resume in the middle of epoch 2 continues with epoch 2's bits
    resumed = MNISTDataModule(binarization="stochastic", binarize_seed=5, batch_size=32, **root).train_dataloader()
    resumed.sampler.load_state_dict({"epoch": 2, "batches_done": 1})
    assert torch.equal(torch.cat(list(resumed)), epochs[2][32:])
    # epoch e's draw is the documented one; split_pixels("train") is epoch 0's
    ds = StochasticBinaryBatchDataset(raw, dm.encoder, 5)
    assert torch.equal(ds.epoch_pixels(2), stochastic_binarize(raw, binarization_seed(5, "train", 2)))
    assert torch.equal(dm.split_pixels("train"), ds.epoch_pixels(0))


def test_val_images_are_drawn_once(root):
    dm = MNISTDataModule(binarization="stochastic", binarize_seed=5, batch_size=8, val_size=16, **root)
    first = torch.cat(list(dm.val_dataloader()))
    assert torch.equal(first, torch.cat(list(dm.val_dataloader())))
    grey = MNISTDataModule(batch_size=8, val_size=16, **root).split_pixels("val")
    assert torch.equal(dm.split_pixels("val"), stochastic_binarize(grey, binarization_seed(5, "val")))


def test_index_batches_carry_the_epoch_to_worker_processes():
    s = IndexBatchSampler(10, 4, shuffle=True, seed=0)
    s.set_epoch(3)
    batches = list(s)
    assert all(isinstance(b, IndexBatch) and b.epoch == 3 for b in batches)
    assert batches[0] == list(batches[0])  # still a list of indices
    copy = pickle.loads(pickle.dumps(batches[0]))
    assert copy == batches[0] and copy.epoch == 3


def test_data_info_and_checkpoints_record_the_binarisation(root):
    dm = MNISTDataModule(binarization="stochastic", binarize_seed=11, **root)
    info = dm.data_info()
    rec = info["binarization"]
    assert rec["kind"] == "stochastic" and rec["seed"] == 11 and rec["train"] == "redrawn each epoch"
    assert len(rec["test_sha256"]) == 16
    assert info["preprocessing"] == "stochastic_binarization_seed_11"
    assert info["datamodule"]["init_args"]["binarization"] == "stochastic"
    assert info["datamodule"]["init_args"]["binarize_seed"] == 11
    state = dm.state_dict()  # what a Lightning checkpoint stores for the data module
    assert state["data_info"]["binarization"] == rec
    # threshold (the default) keeps the info it always had
    plain = MNISTDataModule(**root).data_info()
    assert "binarization" not in plain and "preprocessing" not in plain
    # FID reference statistics of the two test sets are cached apart
    assert data_reference_key(info) != data_reference_key(plain)
    # a resume on the other binarisation is refused
    with pytest.raises(ValueError, match="binarization"):
        MNISTDataModule(**root).load_state_dict(state)
    MNISTDataModule(binarization="stochastic", binarize_seed=11, **root).load_state_dict(state)


def test_evaluation_rebuilds_the_same_test_set_and_checks_it(root):
    dm = MNISTDataModule(binarization="stochastic", binarize_seed=4, **root)
    info = dm.data_info()
    args = {k: v for k, v in root.items() if k != "root"}
    again = datamodule_from_info(info, root=root["root"], **args)
    assert torch.equal(again.split_pixels("test"), dm.split_pixels("test"))
    assert again.data_info()["binarization"] == info["binarization"]
    tampered = {**info, "binarization": {**info["binarization"], "test_sha256": "0" * 16}}
    with pytest.raises(ValueError, match="digest"):
        datamodule_from_info(tampered, root=root["root"], **args).setup()
    # a threshold checkpoint evaluated on the stochastic test set: the info says so
    plain = MNISTDataModule(**root).data_info()
    st = datamodule_from_info(plain, root=root["root"], binarization="stochastic", binarize_seed=4, **args)
    assert st.data_info()["binarization"] == info["binarization"]
    assert st.data_info()["datamodule"]["init_args"]["binarization"] == "stochastic"
    assert torch.equal(st.split_pixels("test"), dm.split_pixels("test"))
    # and back: a stochastic checkpoint on the threshold test set
    th = datamodule_from_info(info, root=root["root"], binarization="threshold", **args)
    assert "binarization" not in th.data_info() and "preprocessing" not in th.data_info()
    assert th.data_info()["datamodule"]["init_args"]["binarization"] == "threshold"


def test_bad_settings(root):
    with pytest.raises(ValueError, match="encoding='binary'"):
        MNISTDataModule(binarization="stochastic", encoding="bitplanes", **root)
    with pytest.raises(ValueError, match="binarization="):
        MNISTDataModule(binarization="bernoulli", **root)


@pytest.mark.skipif(not (Path(os.environ.get("QIDBM_DATA_DIR", "/work/shared/data")) / "MNIST" / "raw").is_dir(),
                    reason="real MNIST not present")
def test_real_mnist_fixed_test_set_matches_its_intensities():
    data = dict(root=os.environ.get("QIDBM_DATA_DIR", "/work/shared/data"), download=False)
    dm = MNISTDataModule(binarization="stochastic", binarize_seed=0, **data)
    bits = dm.split_pixels("test").flatten(1).double() / 255
    grey = MNISTDataModule(**data).split_pixels("test").flatten(1).double() / 255
    # per image, the number of pixels on is a sum of independent Bernoulli(x_p): mean sum x_p, variance sum x_p (1 - x_p)
    var = (grey * (1 - grey)).sum(1)
    keep = var > 0  # an image of pure 0 / 255 pixels is drawn exactly (it is checked below)
    assert torch.equal(bits[~keep], grey[~keep])
    z = (bits.sum(1) - grey.sum(1))[keep] / torch.sqrt(var[keep])
    assert abs(z.mean().item()) < 4 / math.sqrt(len(z)) and abs(z.std().item() - 1) < 0.05
    # and it is not the threshold binarisation (which keeps 0.5 < x < 1 always on)
    assert (bits != (grey > 0.5).double()).double().mean() > 0.01
    assert dm.data_info()["binarization"]["test_sha256"] == MNISTDataModule(
        binarization="stochastic", binarize_seed=0, **data).data_info()["binarization"]["test_sha256"]
