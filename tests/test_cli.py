"""The `qidbm` command: fit, sample on tiny generated data (every shipped config: tests/test_configs.py)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from qidbm.cli import main
from qidbm.data import write_idx

REPO = Path(__file__).resolve().parents[1]


def test_wandb_logger_config_composes(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "configs/quickstart.yaml"), "--config",
              str(REPO / "configs/loggers/wandb.yaml"), "--print_config"])
    assert "qidbm.lightning.WandbLogger" in capsys.readouterr().out


def make_tiny_mnist(root: Path, n_train=240, n_test=60):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        imgs = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):  # a bright bar at a random row: learnable structure
            imgs[i, rng.integers(4, 24), 4:24] = 255
        write_idx(raw / f"{split}-images-idx3-ubyte.gz", imgs)
        write_idx(raw / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return root


TINY = """
seed_everything: 0
trainer:
  accelerator: cpu
  max_epochs: 2
  limit_train_batches: 3
  logger: false
  enable_model_summary: false
  default_root_dir: {out}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {out}/checkpoints, save_last: true, save_top_k: 0}}
    - class_path: qidbm.lightning.SampleGrid
      init_args: {{dirpath: {out}/samples, num_samples: 16, num_steps: 5}}
model:
  class_path: qidbm.lightning.BoltzmannModule
  init_args:
    model:
      class_path: qidbm.models.QiDBM
      init_args: {{layer_sizes: [784, 16, 8], quantum_layers: [1]}}
    kernel: qidbm.samplers.ExactStep
    optimizer: {{class_path: torch.optim.SGD, init_args: {{lr: 0.01}}}}
data:
  class_path: qidbm.data.MNISTDataModule
  init_args: {{root: {root}, encoding: binary, batch_size: 40, download: false}}
"""


@pytest.fixture
def tiny_run(tmp_path):
    root = make_tiny_mnist(tmp_path / "data")
    out = tmp_path / "run"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.format(out=out, root=root))
    return cfg, out


def test_fit_writes_checkpoint_and_grid_then_sample(tiny_run, tmp_path, capsys):
    cfg, out = tiny_run
    main(["fit", "--config", str(cfg)])
    ckpt = out / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert (out / "samples" / "last.png").is_file() and (out / "samples" / "epoch=001.png").is_file()
    info = torch.load(ckpt, weights_only=True)["qidbm"]
    assert info["model_class"] == "QiDBM" and info["data_info"]["encoding"] == "binary"

    assert main(["sample", "--ckpt", str(ckpt), "--num-samples", "10", "--num-steps", "3",
                 "--quantum-step", "exact", "--out", str(tmp_path / "s")]) == 0
    printed = capsys.readouterr().out
    assert "acceptance rate (quantum layer 1)" in printed
    arr = np.load(tmp_path / "s" / "samples.npy")
    assert arr.shape == (10, 1, 28, 28) and arr.min() >= 0 and arr.max() <= 1
    assert (tmp_path / "s" / "samples.png").is_file()
    assert main(["sample", "--ckpt", str(ckpt), "--num-samples", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err


def test_unknown_config_key_is_a_clear_error(tiny_run, capsys):
    cfg, _ = tiny_run
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(cfg), "--model.init_args.learning_rate", "0.1"])
    assert e.value.code != 0
    assert "learning_rate" in capsys.readouterr().err


def test_adjacent_quantum_layers_in_config_is_a_clear_error(tiny_run):
    cfg, _ = tiny_run
    with pytest.raises(ValueError, match="adjacent"):
        main(["fit", "--config", str(cfg), "--model.init_args.model.init_args.layer_sizes", "[784, 16, 8, 4]",
              "--model.init_args.model.init_args.quantum_layers", "[1, 2]"])


def test_model_data_size_mismatch_is_a_clear_error(tiny_run):
    cfg, _ = tiny_run
    with pytest.raises(ValueError, match="n_visible"):
        main(["fit", "--config", str(cfg), "--model.init_args.model.init_args.layer_sizes", "[100, 16, 8]"])


FID_WEIGHTS = REPO.parent / "shared" / "fid" / "pt_inception-2015-12-05-6726825d.pth"


@pytest.mark.skipif(not FID_WEIGHTS.is_file(), reason=f"FID weights not found at {FID_WEIGHTS}")
def test_evaluate_prints_fid_and_ais(tiny_run, tmp_path, capsys):
    cfg, out = tiny_run
    main(["fit", "--config", str(cfg), "--trainer.max_epochs", "1"])
    ckpt = out / "checkpoints" / "last.ckpt"
    res = tmp_path / "eval.json"
    assert main(["evaluate", "--ckpt", str(ckpt), "--num-samples", "20", "--num-steps", "2", "--quantum-step", "exact",
                 "--fid-weights", str(FID_WEIGHTS), "--ais-runs", "4", "--ais-betas", "20",
                 "--ais-test-examples", "20", "--json", str(res), "--data-root", str(tmp_path / "data")]) == 0
    printed = capsys.readouterr().out
    assert "FID (pytorch-fid" in printed and "log Z" in printed and "acceptance rate" in printed
    import json

    r = json.loads(res.read_text())
    assert r["fid"] > 0 and math.isfinite(r["test_log_likelihood"]) and r["num_samples"] == 20


def test_sample_defaults_to_the_trained_protocol_and_prints_classes(tiny_run, tmp_path, capsys):
    cfg, out = tiny_run
    main(["fit", "--config", str(cfg), "--trainer.max_epochs", "1", "--model.init_args.negative",
          "qidbm.estimators.FromNoise", "--model.init_args.negative.sweeps", "3", "--model.init_args.centering",
          "qidbm.lightning.centering.Centering"])
    capsys.readouterr()
    ckpt = out / "checkpoints" / "last.ckpt"
    assert main(["sample", "--ckpt", str(ckpt), "--num-samples", "12", "--out", str(tmp_path / "s")]) == 0
    printed = capsys.readouterr().out
    assert "num_steps=3" in printed and "start=noise" in printed and "output=sample" in printed  # binary machine: its visible states
    assert "classes (shipped MNIST classifier)" in printed and "within 4-20 %" in printed
    # an option given on the command line wins over the trained protocol
    assert main(["sample", "--ckpt", str(ckpt), "--num-samples", "4", "--num-steps", "7", "--out", str(tmp_path / "t")]) == 0
    assert "num_steps=7" in capsys.readouterr().out


@pytest.mark.skipif(not FID_WEIGHTS.is_file(), reason=f"FID weights not found at {FID_WEIGHTS}")
def test_evaluate_a_run_folder_reports_minimum_and_final_fid_and_diagnostics(tiny_run, tmp_path, capsys):
    import json

    cfg, out = tiny_run
    main(["fit", "--config", str(cfg), "--trainer.max_epochs", "1", "--trainer.callbacks+=ModelCheckpoint",
          "--trainer.callbacks.dirpath", str(out / "checkpoints"), "--trainer.callbacks.every_n_train_steps", "1",
          "--trainer.callbacks.save_top_k", "-1", "--trainer.callbacks.filename", "{step}"])
    files = sorted((out / "checkpoints").glob("*.ckpt"))
    assert len(files) >= 3
    res = tmp_path / "eval.json"
    assert main(["evaluate", "--ckpt", str(out), "--num-samples", "24", "--num-steps", "2", "--fid-weights",
                 str(FID_WEIGHTS), "--ais-runs", "0", "--prc-samples", "12", "--copy-samples", "8",
                 "--json", str(res), "--data-root", str(tmp_path / "data")]) == 0
    r = json.loads(res.read_text())
    fids = [c["fid"] for c in r["fid_per_checkpoint"]]
    assert len(fids) == 3 and r["fid_min"] == min(fids) and r["fid_final"] == fids[-1] == r["fid"]
    assert [c["global_step"] for c in r["fid_per_checkpoint"]] == [1, 2, 3]
    assert 0 <= r["precision_recall"]["precision"] <= 1 and r["precision_recall"]["samples"] == 12
    assert sum(r["class_coverage"]["fractions"]) == pytest.approx(1, abs=1e-3)
    assert r["copying"]["samples"] == 8 and r["copying"]["test_nn_median"] >= 0  # tiny data: test rows repeat train rows
    printed = capsys.readouterr().out
    assert "FID over 3 checkpoints: minimum" in printed and "precision" in printed and "nearest training image" in printed


@pytest.mark.skipif(not FID_WEIGHTS.is_file(), reason=f"FID weights not found at {FID_WEIGHTS}")
def test_evaluate_against_the_training_images_uses_their_own_statistics(tiny_run, tmp_path, capsys):
    """--fid-reference train: a different reference (another score, its own cache file) from the same
    samples; the test set stays the default; a bad size or a missing split fails before sampling."""
    import json

    from qidbm.metrics import default_cache_dir

    cfg, out = tiny_run
    main(["fit", "--config", str(cfg), "--trainer.max_epochs", "1"])
    ckpt = str(out / "checkpoints" / "last.ckpt")
    common = ["evaluate", "--ckpt", ckpt, "--num-samples", "16", "--num-steps", "2", "--fid-weights", str(FID_WEIGHTS),
              "--ais-runs", "0", "--prc-samples", "0", "--copy-samples", "0", "--data-root", str(tmp_path / "data")]
    r = {}
    for ref in ("test", "train"):
        assert main([*common, "--fid-reference", ref, "--json", str(tmp_path / f"{ref}.json")]) == 0
        r[ref] = json.loads((tmp_path / f"{ref}.json").read_text())
    assert r["test"]["fid_reference"] == "test" and r["train"]["fid_reference"] == "train (first 240)"
    assert r["train"]["fid"] != r["test"]["fid"]  # tiny data: the bars of the two splits sit at other rows
    assert "vs MNIST train (first 240)" in capsys.readouterr().out
    assert [f for f in default_cache_dir().glob("*.npz") if "split=train" in f.name and "num_images=240" in f.name]
    assert main([*common, "--fid-reference", "train", "--fid-reference-size", "1"]) == 2
    assert "--fid-reference-size must be at least 2" in capsys.readouterr().err
    assert main([*common, "--fid-reference", "val"]) == 2
    assert "no 'val' split" in capsys.readouterr().err


def test_wandb_runs_offline_without_api_key(monkeypatch, tmp_path):
    from qidbm.lightning.loggers import wandb_should_be_offline

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_should_be_offline()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert not wandb_should_be_offline()
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert not wandb_should_be_offline()


@pytest.mark.parametrize("name", ["dbm_mnist_binary", "qidbm_mnist_binary", "grbm_mnist", "qgrbm_mnist"])
def test_shipped_checkpoints_sample_without_data(name, tmp_path, monkeypatch):
    # the README promises `qidbm sample --ckpt checkpoints/...` straight after install: no data, no network
    from pathlib import Path

    ckpt = Path(__file__).resolve().parents[1] / "checkpoints" / f"{name}.ckpt"
    monkeypatch.setenv("QIDBM_DATA_DIR", str(tmp_path / "no-data-here"))
    assert main(["sample", "--ckpt", str(ckpt), "--num-samples", "4", "--num-steps", "3", "--out", str(tmp_path / "s")]) == 0
    arr = np.load(tmp_path / "s" / "samples.npy")
    assert arr.shape[0] == 4 and np.isfinite(arr).all() and (tmp_path / "s" / "samples.png").is_file()
