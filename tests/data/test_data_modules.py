"""MNIST / Fashion-MNIST data modules on tiny generated IDX folders (torchvision layout),
plus one check against the real MNIST in /work/shared/data when it is present."""

import hashlib
import json
import stat
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision

from qidbm.data import (
    DataNotFoundError,
    FashionMNISTDataModule,
    IDXError,
    MNISTDataModule,
    compute_normalization,
    decode,
    validate,
)
from qidbm.data.testing import make_idx_dataset

N_TRAIN, N_TEST = 64, 32
MODULES = {"MNIST": MNISTDataModule, "FashionMNIST": FashionMNISTDataModule}


def snapshot(folder: Path) -> dict:
    """Every path under ``folder`` with its mode, size, mtime and content hash."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        out[str(p.relative_to(folder))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def make_read_only(folder: Path):
    for p in [folder, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def restore_writable(folder: Path):
    for p in [folder, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.fixture
def gz_root(tmp_path):
    """A read-only data root with MNIST and FashionMNIST as .gz files only."""
    root = tmp_path / "src"
    data = {name: make_idx_dataset(root, name, N_TRAIN, N_TEST, seed=i) for i, name in enumerate(MODULES)}
    make_read_only(root)
    yield root, data
    restore_writable(root)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.mark.parametrize("name", list(MODULES))
def test_gz_only_read_only_root_is_decompressed_into_cache(gz_root, cache, name):
    root, data = gz_root
    before = snapshot(root)
    dm = MODULES[name](root=str(root), cache_dir=str(cache), download=False)
    dm.prepare_data()
    dm.setup()
    assert snapshot(root) == before  # the source folder is never written to
    for f in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert (cache / name / "raw" / f).is_file()  # mirrored torchvision layout
    assert torch.equal(dm.split_pixels("train"), torch.from_numpy(data[name]["train"]).unsqueeze(1))
    assert torch.equal(dm.split_pixels("test"), torch.from_numpy(data[name]["test"]).unsqueeze(1))
    # torchvision itself reads the cache root (labels included), confirming the layout
    tv = getattr(torchvision.datasets, name)(str(cache), train=False)
    assert torch.equal(tv.targets, torch.from_numpy(data[name]["test_labels"]).long())
    assert dm.data_info()["dataset"] == name
    # a second module reuses the cached files
    mtime = (cache / name / "raw" / "train-images-idx3-ubyte").stat().st_mtime_ns
    MODULES[name](root=str(root), cache_dir=str(cache), download=False).setup()
    assert (cache / name / "raw" / "train-images-idx3-ubyte").stat().st_mtime_ns == mtime
    assert snapshot(root) == before


def test_decompressed_root_is_used_in_place(tmp_path, cache):
    data = make_idx_dataset(tmp_path / "plain", "MNIST", N_TRAIN, N_TEST, gz=False)
    dm = MNISTDataModule(root=str(tmp_path / "plain"), cache_dir=str(cache), download=False)
    dm.setup()
    assert torch.equal(dm.split_pixels("train")[:, 0], torch.from_numpy(data["train"]))
    assert not cache.exists()


def test_env_vars_and_default_root(gz_root, tmp_path, monkeypatch):
    root, data = gz_root
    monkeypatch.setenv("QIDBM_DATA_DIR", str(root))
    monkeypatch.setenv("QIDBM_CACHE_DIR", str(tmp_path / "envcache"))
    dm = MNISTDataModule(download=False)
    assert dm.data_root == root and dm.cache_root == tmp_path / "envcache"
    dm.setup()
    assert (tmp_path / "envcache" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    monkeypatch.delenv("QIDBM_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert MNISTDataModule().data_root == tmp_path / "data"


def test_changed_source_replaces_stale_cache(tmp_path, cache):
    src = tmp_path / "src"
    make_idx_dataset(src, "MNIST", N_TRAIN, N_TEST, seed=0)
    MNISTDataModule(root=str(src), cache_dir=str(cache), download=False).setup()
    new = make_idx_dataset(src, "MNIST", N_TRAIN + 8, N_TEST, seed=9)  # different source files
    dm = MNISTDataModule(root=str(src), cache_dir=str(cache), download=False)
    dm.setup()
    assert torch.equal(dm.split_pixels("train")[:, 0], torch.from_numpy(new["train"]))


@pytest.mark.parametrize(
    "damage,match",
    [
        (lambda b: b[: len(b) // 3], "truncated gzip"),
        (lambda b: b[:20] + bytes(x ^ 0x77 for x in b[20:60]) + b[60:], "(corrupt|truncated) gzip"),
        (lambda b: b"not a gzip file", "corrupt gzip"),
    ],
)
def test_corrupt_gz_names_the_file(tmp_path, cache, damage, match):
    src = tmp_path / "src"
    make_idx_dataset(src, "MNIST", N_TRAIN, N_TEST)
    p = src / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    p.write_bytes(damage(p.read_bytes()))
    with pytest.raises(IDXError, match=rf"{p}: {match}"):
        MNISTDataModule(root=str(src), cache_dir=str(cache), download=False).setup()
    assert not (cache / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_bad_magic_and_swapped_files(tmp_path, cache):
    import gzip

    src = tmp_path / "src"
    make_idx_dataset(src, "MNIST", N_TRAIN, N_TEST)
    raw = src / "MNIST" / "raw"
    p = raw / "t10k-labels-idx1-ubyte.gz"
    body = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x09" + body[4:]))
    with pytest.raises(IDXError, match=rf"{p}: bad IDX magic number 0x00000809"):
        MNISTDataModule(root=str(src), cache_dir=str(cache), download=False).setup()
    make_idx_dataset(src, "MNIST", N_TRAIN, N_TEST)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes((raw / "t10k-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(IDXError, match=r"t10k-labels-idx1-ubyte\.gz: bad IDX magic number 0x00000803.*swapped"):
        MNISTDataModule(root=str(src), cache_dir=str(cache), download=False).setup()


def test_truncated_decompressed_file_in_root(tmp_path, cache):
    src = tmp_path / "src"
    make_idx_dataset(src, "MNIST", N_TRAIN, N_TEST, gz=False)
    p = src / "MNIST" / "raw" / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(IDXError, match=rf"{p}: IDX size mismatch, file truncated"):
        MNISTDataModule(root=str(src), cache_dir=str(cache), download=False).setup()


def test_empty_root_without_download_names_both_fixes(tmp_path, cache):
    with pytest.raises(DataNotFoundError) as e:
        MNISTDataModule(root=str(tmp_path / "empty"), cache_dir=str(cache), download=False).setup()
    msg = str(e.value)
    assert "MNIST data not found" in msg and "train-images-idx3-ubyte(.gz)" in msg
    assert "QIDBM_DATA_DIR" in msg and "`root`" in msg  # way 1
    assert "enable network access and use download=True" in msg  # way 2
    assert isinstance(e.value, FileNotFoundError)


def test_offline_download_failure_is_explained(tmp_path, cache, monkeypatch):
    calls = []

    def offline(self):
        calls.append(self.root)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(DataNotFoundError, match=r"downloading failed \(URLError.*Two ways to fix"):
        MNISTDataModule(root=str(tmp_path / "empty"), cache_dir=str(cache), download=True).setup()
    assert calls == [str(tmp_path / "empty")]  # a writable root receives the download


def test_download_path_used_when_files_missing(tmp_path, cache, monkeypatch):
    """download=True hands torchvision the root; what it fetches is then validated and read."""

    def fake_download(self):
        make_idx_dataset(self.root, "MNIST", N_TRAIN, N_TEST, gz=False, seed=4)

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download)
    dm = MNISTDataModule(root=str(tmp_path / "dl"), cache_dir=str(cache), download=True)
    dm.setup()
    assert dm.split_pixels("train").shape == (N_TRAIN, 1, 28, 28)


@pytest.fixture
def mnist_root(tmp_path):
    data = make_idx_dataset(tmp_path / "src", "MNIST", N_TRAIN, N_TEST, seed=2)
    return tmp_path / "src", tmp_path / "cache", data


@pytest.mark.parametrize("encoding", ["binary", "bitplanes", "continuous"])
def test_batches_and_test_images(mnist_root, encoding):
    root, cache, data = mnist_root
    dm = MNISTDataModule(root=str(root), cache_dir=str(cache), encoding=encoding, batch_size=16, download=False)
    assert dm.n_visible == (6272 if encoding == "bitplanes" else 784)  # known before setup
    assert dm.image_shape == (1, 28, 28)
    dm.setup()
    info = dm.data_info()
    assert json.loads(json.dumps(info)) == info and info["n_visible"] == dm.n_visible
    batches = list(dm.train_dataloader())
    assert len(batches) == N_TRAIN // 16
    for b in batches:
        assert b.shape == (16, dm.n_visible) and b.dtype == torch.float32
        validate(b, info)
    seen = torch.cat([decode(b, info) for b in batches])
    assert seen.shape == (N_TRAIN, 1, 28, 28)
    test = list(dm.test_dataloader())
    assert sum(len(b) for b in test) == N_TEST
    ref = dm.test_images()
    x = torch.from_numpy(data["test"]).unsqueeze(1)
    assert ref.shape == (N_TEST, 1, 28, 28) and ref.dtype == torch.float32
    if encoding == "binary":
        assert torch.equal(ref, (x >= 128).float())
    elif encoding == "bitplanes":
        assert torch.equal(ref, x.float() / 255)
    else:
        torch.testing.assert_close(ref, x.float() / 255, rtol=0, atol=1e-6)
    assert torch.equal(torch.cat(test), dm.encode(x))


def test_validation_hold_out_is_seeded_and_disjoint(mnist_root):
    root, cache, data = mnist_root
    kw = dict(root=str(root), cache_dir=str(cache), download=False, val_size=10, batch_size=8, encoding="continuous")
    dm = MNISTDataModule(**kw)
    dm.setup()
    train, val = dm.split_pixels("train"), dm.split_pixels("val")
    assert train.shape[0] == N_TRAIN - 10 and val.shape[0] == 10
    full = torch.from_numpy(data["train"]).unsqueeze(1)
    rows = {bytes(r.numpy().tobytes()): i for i, r in enumerate(full)}
    ti = {rows[r.numpy().tobytes()] for r in train}
    vi = {rows[r.numpy().tobytes()] for r in val}
    assert not ti & vi and ti | vi == set(range(N_TRAIN))
    # same seed -> same split, other seed -> another split
    dm2 = MNISTDataModule(**kw)
    dm2.setup()
    assert torch.equal(dm2.split_pixels("val"), val)
    dm3 = MNISTDataModule(**{**kw, "seed": 1})
    dm3.setup()
    assert not torch.equal(dm3.split_pixels("val"), val)
    # the normalisation comes from the training part only
    norm = dm.data_info()["normalization"]
    want = compute_normalization(train, "pixel", 0.01)
    assert norm["kind"] == "pixel" and norm["mean"] == want["mean"] and norm["std"] == want["std"]
    assert norm["mean"] != compute_normalization(full, "pixel", 0.01)["mean"]
    vb = list(dm.val_dataloader())
    assert [len(b) for b in vb] == [8, 2]
    assert MNISTDataModule(root=str(root), cache_dir=str(cache), download=False).val_dataloader() == []


def test_shuffle_off_and_bad_arguments(mnist_root):
    root, cache, _ = mnist_root
    kw = dict(root=str(root), cache_dir=str(cache), download=False)
    dm = MNISTDataModule(**kw, shuffle=False, batch_size=16)
    dm.setup()
    first = next(iter(dm.train_dataloader()))
    assert torch.equal(first, dm.encode(dm.split_pixels("train")[:16]))
    with pytest.raises(ValueError, match="fewer than batch_size=600.*lower batch_size"):
        MNISTDataModule(**kw).train_dataloader()
    with pytest.raises(ValueError, match="val_size=64 leaves no training images"):
        MNISTDataModule(**kw, val_size=64).setup()
    with pytest.raises(ValueError, match="encoding="):
        MNISTDataModule(**kw, encoding="grey")


def test_checkpoint_state_roundtrip(mnist_root):
    root, cache, _ = mnist_root
    dm = MNISTDataModule(root=str(root), cache_dir=str(cache), download=False, encoding="bitplanes")
    state = dm.state_dict()
    assert state["data_info"]["n_visible"] == 6272
    MNISTDataModule(root=str(root), cache_dir=str(cache), download=False, encoding="bitplanes").load_state_dict(state)
    other = MNISTDataModule(root=str(root), cache_dir=str(cache), download=False, encoding="binary")
    with pytest.raises(ValueError, match="encoding='bitplanes'"):
        other.load_state_dict(state)


def test_datamodule_from_info_rebuilds_and_pins(mnist_root):
    from qidbm.data import datamodule_from_info

    root, cache, data = mnist_root
    kw = dict(cache_dir=str(cache), download=False)
    dm = MNISTDataModule(root=str(root), encoding="continuous", val_size=8, seed=3, batch_size=8, **kw)
    info = json.loads(json.dumps(dm.data_info()))  # as stored in a checkpoint
    assert info["datamodule"]["init_args"]["val_size"] == 8 and "root" not in info["datamodule"]["init_args"]
    again = datamodule_from_info(info, root=str(root), **kw)
    assert type(again) is MNISTDataModule and again.val_size == 8 and again.seed == 3
    assert again.data_info() == info
    assert torch.equal(again.split_pixels("val"), dm.split_pixels("val"))
    # pinned: the recorded statistics are used even where recomputing would differ
    shifted = json.loads(json.dumps(info))
    shifted["normalization"]["mean"] = [m + 0.25 for m in info["normalization"]["mean"]]
    pinned = datamodule_from_info(shifted, root=str(root), **kw)
    x = pinned.split_pixels("test")
    torch.testing.assert_close(pinned.encode(x), dm.encode(x) - 0.25 / torch.tensor(info["normalization"]["std"]))
    with pytest.raises(ValueError, match="encoding='continuous' but this data module gives 'binary'"):
        MNISTDataModule(root=str(root), **kw).pin_info(info)
    # without a recipe: dataset name and image shape suffice
    bare = {k: v for k, v in info.items() if k != "datamodule"}
    assert type(datamodule_from_info(bare, root=str(root), **kw)) is MNISTDataModule
    from qidbm.data import make_info

    # LightningCLI adds keys such as _class_path to hparams; they are not constructor arguments
    cli_info = json.loads(json.dumps(info))
    cli_info["datamodule"]["init_args"]["_class_path"] = "qidbm.data.MNISTDataModule"
    assert datamodule_from_info(cli_info, root=str(root), **kw).val_size == 8
    dm.hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
    assert "_instantiator" not in dm._recipe()["init_args"]
    celeba = datamodule_from_info(make_info("CelebA", "bitplanes", [1, 64, 64]), root=str(root))
    assert (celeba.image_size, celeba.grayscale, celeba.n_visible) == (64, True, 8 * 64 * 64)


def test_lightning_fit_uses_batches_and_epochs(mnist_root, tmp_path):
    """A real Trainer run: batches arrive whole, validation runs, set_epoch reshuffles, and the
    checkpoint carries data_info and the module's hyperparameters."""
    import lightning as L

    root, cache, _ = mnist_root

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[list] = []
            self.val_rows = 0

        def on_train_epoch_start(self):
            self.seen.append([])

        def training_step(self, batch, i):
            validate(batch, self.trainer.datamodule.data_info())
            self.seen[-1].append(batch.clone())
            return (self.w * batch.mean()).sum()

        def validation_step(self, batch, i):
            self.val_rows += batch.shape[0]

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = MNISTDataModule(root=str(root), cache_dir=str(cache), download=False, batch_size=10, val_size=14)
    model = Probe()
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    assert [len(e) for e in model.seen] == [5, 5]  # 50 training images, drop_last
    assert all(b.shape == (10, 784) for e in model.seen for b in e)
    assert not torch.equal(torch.cat(model.seen[0]), torch.cat(model.seen[1]))  # reshuffled
    assert model.val_rows == 2 * 14
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)
    assert saved["MNISTDataModule"]["data_info"] == dm.data_info()
    assert saved["datamodule_hyper_parameters"]["batch_size"] == 10


def test_jsonargparse_builds_modules_from_config():
    from jsonargparse import ArgumentParser

    from qidbm.data import CelebADataModule

    p = ArgumentParser(exit_on_error=False)
    p.add_class_arguments(MNISTDataModule, "mnist")
    p.add_class_arguments(CelebADataModule, "celeba")
    cfg = p.parse_args(["--mnist.encoding=bitplanes", "--mnist.val_size=100", "--celeba.image_size=64", "--celeba.grayscale=true"])
    init = p.instantiate_classes(cfg)
    assert init.mnist.encoding == "bitplanes" and init.mnist.n_visible == 6272 and init.mnist.batch_size == 600
    assert init.celeba.image_shape == (1, 64, 64) and init.celeba.n_visible == 4096
    with pytest.raises(Exception):
        p.parse_args(["--celeba.image_size=48"])
    with pytest.raises(Exception):
        p.parse_args(["--mnist.encoding=grey"])


def test_lightning_cli_links_n_visible(monkeypatch):
    """The intended CLI wiring: data modules chosen by class_path, the model's n_visible
    linked from the data module (a property known before any data is read)."""
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    from qidbm.data import ImageDataModule

    class Model(L.LightningModule):
        def __init__(self, n_visible: int = 1):
            super().__init__()
            self.save_hyperparameters()

    class CLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.link_arguments("data.n_visible", "model.n_visible", apply_on="instantiate")

    cfg = {"class_path": "qidbm.data.CelebADataModule", "init_args": {"encoding": "bitplanes", "grayscale": True}}
    monkeypatch.setattr("sys.argv", ["qidbm"])  # args= stands in for the command line
    cli = CLI(
        Model, ImageDataModule, subclass_mode_data=True, run=False, seed_everything_default=False,
        args={"data": cfg, "trainer": {"logger": False}},
    )
    assert type(cli.datamodule).__name__ == "CelebADataModule"
    assert cli.model.hparams.n_visible == 8 * 32 * 32


SHARED = Path("/work/shared/data")


@pytest.mark.parametrize("name,mean", [("MNIST", 33.32), ("FashionMNIST", 72.94)])
def test_real_data(tmp_path, name, mean):
    """The shared read-only copy (README: 60000 + 10000 images, mean train pixel as given)."""
    raw = SHARED / name / "raw"
    if not (raw / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared {name} not present")
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in raw.iterdir()}
    dm = MODULES[name](root=str(SHARED), cache_dir=str(tmp_path), download=False)
    dm.setup()
    train, test = dm.split_pixels("train"), dm.split_pixels("test")
    assert train.shape == (60000, 1, 28, 28) and test.shape == (10000, 1, 28, 28)
    assert round(train.double().mean().item(), 2) == mean
    ref = dm.test_images()
    assert ref.shape == (10000, 1, 28, 28) and torch.equal(ref, (test >= 128).float())
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in raw.iterdir()} == before


def test_reference_images_of_the_training_split_are_its_first_images_decoded(mnist_root):
    root, cache, data = mnist_root
    dm = MNISTDataModule(root=str(root), cache_dir=str(cache), encoding="binary", batch_size=16, download=False)
    dm.setup()
    x = torch.from_numpy(data["train"]).unsqueeze(1)
    assert torch.equal(dm.reference_images("train", 5), (x[:5] >= 128).float())
    assert torch.equal(dm.reference_images("train"), (x >= 128).float())
    assert torch.equal(dm.reference_images("test"), dm.test_images())
    with pytest.raises(ValueError, match="no 'val' split"):
        dm.reference_images("val")
    with pytest.raises(ValueError, match="num_images must be >= 2"):
        dm.reference_images("train", 1)
