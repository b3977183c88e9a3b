"""Bad input gets a clear error that says how to fix it (one injected fault per test).

Other tests already cover some of these at the unit level (listed in the README's Reliability table):
tests/data/test_data_idx.py and tests/data/test_data_modules.py (IDX/gz files, empty roots),
tests/metrics/test_fid.py (FID weights), tests/test_cli.py (unknown keys, adjacent quantum layers).
Here each fault goes through the user-facing entry point (`qidbm fit|sample|evaluate`, the
training step).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qidbm.cli import main
from qidbm.lightning import BoltzmannModule
from qidbm.lightning.batch_checks import validate_batch_for_model
from qidbm.models import QRBM, RBM, QGRBM, QiDBM
from tests.test_cli import TINY, make_tiny_mnist


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny MNIST, a config for it and one checkpoint written by `qidbm fit` (1 step)."""
    tmp = tmp_path_factory.mktemp("badinput")
    root = make_tiny_mnist(tmp / "data")
    out = tmp / "run"
    cfg = tmp / "tiny.yaml"
    cfg.write_text(TINY.format(out=out, root=root).replace("limit_train_batches: 3", "limit_train_batches: 1")
                   .replace("max_epochs: 2", "max_epochs: 1"))
    main(["fit", "--config", str(cfg)])
    ckpt = tmp / "tiny.ckpt"
    (out / "checkpoints" / "last.ckpt").rename(ckpt)  # the run folder is free for the fits of the tests below
    return {"root": root, "cfg": cfg, "ckpt": ckpt, "tmp": tmp}


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("args,name", [
    (["--model.init_args.learning_rate", "0.1"], "learning_rate"),                         # unknown key
    (["--model.init_args.negative", "qidbm.estimators.FromData",
      "--model.init_args.negative.init_args.sweeps", "many"], "sweeps"),                   # ill-typed value
    (["--trainer.max_epochs", "two"], "max_epochs"),
    (["--model.init_args.matmul_precision", "float16"], "matmul_precision"),                # not one of the choices
    (["--model.init_args.negative", "random"], "negative"),                                # not an estimator
])
def test_unknown_or_ill_typed_config_key(tiny, capsys, args, name):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(tiny["cfg"]), *args])
    assert e.value.code != 0
    assert name in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--model.init_args.cd_steps", "20"], ["--model.init_args.negative_start", "noise"]])
def test_flat_option_of_the_old_module_says_what_replaced_it(tiny, capsys, args):
    assert main(["fit", "--config", str(tiny["cfg"]), *args]) == 2
    err = capsys.readouterr().err
    assert "flat training option" in err and "--model.init_args.negative.sweeps" in err


@pytest.mark.parametrize("layers,quantum,match", [
    ([784, 16, 8, 4], [1, 2], "adjacent"),
    ([784, 16, 8], [0], "visible"),
    ([784, 16, 8], [3], "hidden layers are numbered"),
])
def test_adjacent_quantum_layers_or_quantum_visible_layer(tiny, layers, quantum, match):
    with pytest.raises(ValueError, match=match):
        main(["fit", "--config", str(tiny["cfg"]), "--model.init_args.model.init_args.layer_sizes", str(layers),
              "--model.init_args.model.init_args.quantum_layers", str(quantum)])


# ---------------------------------------------------------------- data for the model
def _fit_on(x, model, tmp_path):
    t = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, default_root_dir=str(tmp_path))
    t.fit(BoltzmannModule(model, init_visible=None), DataLoader(TensorDataset(x), batch_size=8))


@pytest.mark.parametrize("make,match", [
    (lambda: torch.randint(0, 256, (16, 16), dtype=torch.uint8), "8-bit"),           # raw pixels, uint8
    (lambda: torch.randint(0, 256, (16, 16)).float(), "8-bit pixel values"),          # raw pixels, float
    (lambda: torch.randn(16, 16), r"values in \[.*binary visible units"),             # normalised data
    (lambda: torch.rand(16, 20).round(), r"shape \[8, 20\].*n_visible=16"),           # wrong width
    (lambda: torch.full((16, 16), float("nan")), "NaN"),
])
def test_wrong_data_for_a_binary_model_fails_on_the_first_batch(tmp_path, make, match):
    with pytest.raises(ValueError, match=match):
        _fit_on(make(), QRBM(16, 4), tmp_path)


def test_first_batch_check_accepts_good_data_and_gaussian_models(tmp_path):
    _fit_on(torch.rand(16, 16).round(), RBM(16, 4), tmp_path)
    _fit_on(torch.randn(16, 16), QGRBM(16, 4), tmp_path)  # Gaussian visibles take any real value


def test_greyscale_batch_against_binary_data_info(tiny):
    """With the data module's info (encoding 'binary'), values that are not 0/1 are refused."""
    from qidbm.data import MNISTDataModule

    dm = MNISTDataModule(root=str(tiny["root"]), encoding="binary", download=False, batch_size=40)
    dm.setup("fit")
    with pytest.raises(ValueError, match="greyscale pixels or probabilities"):
        validate_batch_for_model(torch.full((4, 784), 0.5), QiDBM([784, 16, 8], [1]), dm.data_info())


def test_encoding_model_mismatch_through_the_cli(tiny):
    with pytest.raises(ValueError, match="Gaussian visible units"):
        main(["fit", "--config", str(tiny["cfg"]), "--data.init_args.encoding", "continuous"])
    with pytest.raises(ValueError, match="n_visible"):  # 8 bit planes per pixel into a 784-unit model
        main(["fit", "--config", str(tiny["cfg"]), "--data.init_args.encoding", "bitplanes"])


# ---------------------------------------------------------------- files
def test_truncated_idx_gz_names_the_file(tiny, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny["root"], root)
    f = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.raises(Exception, match="train-images-idx3-ubyte") as e:
        main(["fit", "--config", str(tiny["cfg"]), "--data.init_args.root", str(root),
              "--data.init_args.cache_dir", str(tmp_path / "cache")])
    assert "truncated" in str(e.value).lower() or "corrupt" in str(e.value).lower()


def test_idx_with_wrong_magic_names_the_file(tiny, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny["root"], root)
    f = root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[2:4] = b"\x0d\x03"  # magic of a 3-D float array instead of 1-D uint8 labels
    f.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(Exception, match="train-labels-idx1-ubyte"):
        main(["fit", "--config", str(tiny["cfg"]), "--data.init_args.root", str(root),
              "--data.init_args.cache_dir", str(tmp_path / "cache")])


def test_empty_data_root_offline(tiny, tmp_path):
    from qidbm.data import DataNotFoundError

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="(?s)MNIST data not found.*QIDBM_DATA_DIR.*download=True"):
        main(["fit", "--config", str(tiny["cfg"]), "--data.init_args.root", str(tmp_path / "empty"),
              "--data.init_args.cache_dir", str(tmp_path / "cache")])


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_of_another_model_class(tiny):
    with pytest.raises(ValueError, match="holds a QiDBM but the module was built with a DBM"):
        main(["fit", "--config", str(tiny["cfg"]), "--model.init_args.model", "qidbm.models.DBM",
              "--model.init_args.model.init_args.layer_sizes", "[784, 16, 8]", "--ckpt_path", str(tiny["ckpt"])])


def test_checkpoint_of_an_older_format(tiny, tmp_path):
    ck = torch.load(tiny["ckpt"], weights_only=True)
    ck["qidbm"]["format_version"] = 0
    old = tmp_path / "old.ckpt"
    torch.save(ck, old)
    with pytest.raises(ValueError, match="checkpoint format 0 is not supported"):
        main(["fit", "--config", str(tiny["cfg"]), "--ckpt_path", str(old)])
    with pytest.raises(ValueError, match="checkpoint format 0 is not supported"):
        main(["sample", "--ckpt", str(old), "--num-samples", "2", "--num-steps", "1", "--out", str(tmp_path / "s")])
    del ck["qidbm"]
    torch.save(ck, old)
    with pytest.raises(ValueError, match="no 'qidbm' section"):
        main(["sample", "--ckpt", str(old), "--num-samples", "2", "--num-steps", "1", "--out", str(tmp_path / "s")])


def test_truncated_checkpoint(tiny, tmp_path):
    bad = tmp_path / "cut.ckpt"
    data = Path(tiny["ckpt"]).read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"could not read checkpoint .*cut\.ckpt.*truncated"):
        main(["fit", "--config", str(tiny["cfg"]), "--ckpt_path", str(bad)])
    with pytest.raises(ValueError, match=r"could not read checkpoint .*cut\.ckpt"):
        main(["sample", "--ckpt", str(bad), "--num-samples", "2", "--out", str(tmp_path / "s")])


# ---------------------------------------------------------------- sample / evaluate arguments
@pytest.mark.parametrize("n", ["0", "-3"])
def test_sample_zero_or_negative_number_of_samples(tiny, capsys, n):
    assert main(["sample", "--ckpt", str(tiny["ckpt"]), "--num-samples", n]) == 2
    assert "--num-samples must be a positive integer" in capsys.readouterr().err


def test_evaluate_with_missing_fid_weights(tiny, tmp_path):
    from qidbm.metrics.fid import FIDWeightsError

    with pytest.raises(FIDWeightsError, match="does not exist"):
        main(["evaluate", "--ckpt", str(tiny["ckpt"]), "--num-samples", "2", "--num-steps", "1",
              "--fid-weights", str(tmp_path / "nope.pth"), "--ais-runs", "0", "--data-root", str(tiny["root"])])


# ---------------------------------------------------------------- module arguments, checked at construction
@pytest.mark.parametrize("key,cls,value,match", [
    ("negative", "Persistent", ("num_chains", "0"),
     r"num_chains must be a positive integer .*or null for one chain per batch row; got 0"),
    ("negative", "Persistent", ("num_chains", "-3"), r"num_chains must be a positive integer .*got -3"),
    ("negative", "FromNoise", ("sweeps", "0"), r"sweeps must be an integer >= 1 .*got 0"),
    ("positive", "ClampedGibbs", ("steps", "0"), r"ClampedGibbs needs an integer number of steps >= 1 .*got 0"),
    ("positive", "ClampedGibbs", ("steps", "-2"), r"ClampedGibbs needs an integer number of steps >= 1 .*got -2"),
])
def test_bad_module_arguments_fail_at_construction(tiny, key, cls, value, match):
    with pytest.raises(ValueError, match=match):
        main(["fit", "--config", str(tiny["cfg"]), f"--model.init_args.{key}", f"qidbm.estimators.{cls}",
              f"--model.init_args.{key}.init_args.{value[0]}", value[1]])


def test_bad_learning_rate_fails_before_the_first_step(tiny, tmp_path):
    # torch's own check, when the optimizer is made on the parameters
    with pytest.raises(ValueError, match=r"Invalid learning rate: -0\.1"):
        main(["fit", "--config", str(tiny["cfg"]), "--model.init_args.optimizer.init_args.lr", "-0.1",
              "--trainer.default_root_dir", str(tmp_path / "run")])
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_num_chains_null_still_means_the_batch_size(tmp_path):
    from qidbm.estimators import Persistent

    m = BoltzmannModule(RBM(16, 4), negative=Persistent(num_chains=None), init_visible=None)
    t = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, default_root_dir=str(tmp_path))
    t.fit(m, DataLoader(TensorDataset(torch.rand(16, 16).round()), batch_size=8))
    assert m.chains[0].shape[0] == 8


# ---------------------------------------------------------------- CelebA images
@pytest.mark.parametrize("damage", ["missing", "not a JPEG", "truncated"])
def test_celeba_bad_jpeg_names_the_file(tmp_path, damage):
    from qidbm.data import CelebADataModule
    from qidbm.data.datamodules import CelebAImageError
    from qidbm.data.testing import make_celeba_folder

    f = make_celeba_folder(tmp_path / "data")["train"][2]
    if damage == "missing":
        f.unlink()
    elif damage == "not a JPEG":
        f.write_bytes(b"<html>quota exceeded</html>")
    else:
        f.write_bytes(f.read_bytes()[:300])
    dm = CelebADataModule(root=str(tmp_path / "data"), download=False, batch_size=2, cache_dir=str(tmp_path / "c"))
    with pytest.raises(CelebAImageError, match=rf"CelebA image .*{f.name} (is missing|cannot be read as an image).*"
                                               r"Restore it .*list_eval_partition\.txt"):
        dm.setup("fit")


# ---------------------------------------------------------------- what is given as a checkpoint
def test_text_file_as_checkpoint(tiny, tmp_path):
    txt = tmp_path / "notes.ckpt"
    txt.write_text("this is a text file\n")
    msg = r"could not read checkpoint .*notes\.ckpt: it is not a checkpoint file .*starts with b'this is a te'.*qidbm fit"
    with pytest.raises(ValueError, match=msg):
        main(["sample", "--ckpt", str(txt), "--num-samples", "2", "--out", str(tmp_path / "s")])
    with pytest.raises(ValueError, match=msg):
        main(["fit", "--config", str(tiny["cfg"]), "--ckpt_path", str(txt)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_not_a_damaged_checkpoint(tiny, tmp_path, capsys):
    from qidbm.checkpoint import load_checkpoint, unreadable_checkpoint_message

    for cmd in (["sample", "--out", str(tmp_path / "s")], ["evaluate", "--no-fid", "--ais-runs", "0"]):
        assert main([cmd[0], "--ckpt", str(tiny["ckpt"]), "--device", "cuda", *cmd[1:]]) == 2
        assert "--device: device 'cuda' was asked for but this machine has no usable CUDA GPU" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no usable CUDA GPU.*--device cpu"):
        load_checkpoint(tiny["ckpt"], map_location="cuda")
    # a checkpoint holding CUDA tensors, read on a machine without a GPU (torch's own error)
    err = RuntimeError("Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False.")
    assert "holds GPU (CUDA) tensors and this machine has no GPU" in unreadable_checkpoint_message(tiny["ckpt"], err)


# ---------------------------------------------------------------- sample / evaluate: checked before the work
@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any sampling or AIS starts."""
    import qidbm.metrics.likelihood as likelihood
    import qidbm.samplers.drawing as drawing

    def boom(*a, **k):
        raise AssertionError("the expensive part ran before the argument error")

    monkeypatch.setattr(drawing, "draw", boom)
    monkeypatch.setattr(likelihood, "ais_log_partition", boom)


@pytest.mark.parametrize("args,match", [
    (["--ais-test-examples", "-9990"], "--ais-test-examples must be a positive number of test images .* got -9990"),
    (["--ais-test-examples", "0"], "--ais-test-examples must be a positive number .* got 0; --ais-runs 0 skips AIS"),
    (["--ais-runs", "1"], "--ais-runs must be 0 .* or at least 2, got 1"),
    (["--json", "{file}/results.json"], r"--json .*results\.json: cannot create .*: .*not-a-folder is a file, not a folder"),
    (["--save-samples", "{file}/s"], r"--save-samples .*: cannot create .*not-a-folder is a file"),
])
def test_evaluate_arguments_fail_before_sampling_or_ais(tiny, tmp_path, capsys, no_work, args, match):
    file = tmp_path / "not-a-folder"
    file.write_text("x")
    args = [a.format(file=file) for a in args]
    assert main(["evaluate", "--ckpt", str(tiny["ckpt"]), "--num-samples", "4", "--num-steps", "1",
                 "--data-root", str(tiny["root"]), *args]) == 2
    assert __import__("re").search(match, capsys.readouterr().err)


def test_sample_out_under_a_file_fails_before_sampling(tiny, tmp_path, capsys, no_work):
    file = tmp_path / "not-a-folder"
    file.write_text("x")
    for out in (file / "samples", file / "grid.png"):
        assert main(["sample", "--ckpt", str(tiny["ckpt"]), "--out", str(out)]) == 2
        assert f"{file} is a file, not a folder" in capsys.readouterr().err


def test_too_many_samples_for_the_memory_fail_before_sampling(tiny, tmp_path, capsys, no_work, monkeypatch):
    import qidbm.preflight

    monkeypatch.setattr(qidbm.preflight, "available_memory_bytes", lambda: 2 * 10**9)  # a 2 GB machine
    assert main(["sample", "--ckpt", str(tiny["ckpt"]), "--num-samples", "3000000", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "--num-samples 3000000 needs about 28.2 GB of memory" in err and "2.0 GB is available" in err
    assert "Draw at most about 212585 samples per call" in err
    assert main(["evaluate", "--ckpt", str(tiny["ckpt"]), "--num-samples", "3000000", "--ais-runs", "0"]) == 2
    assert "needs about 28.2 GB" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
