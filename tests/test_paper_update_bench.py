"""bench/paper_update.py: the protocol is read from the paper configs, and one timed and counted
update of the paper DBM runs end to end (MNIST needed: skipped without it)."""

import os
from pathlib import Path

import pytest

from tests.scripts import load_script

CONFIGS = ["configs/paper/mnist_binary/base.yaml", "configs/paper/mnist_binary/qidbm_498.yaml"]


def _load():
    return load_script("bench/paper_update.py")


def test_the_protocol_comes_from_the_config_files():
    bench = _load()
    module, dm = bench.build(CONFIGS, {"matmul_precision": "bfloat16", "fused_kernels": True})
    assert module.model.layer_sizes == (784, 498, 498) and module.model.quantum_layers == (1,)
    assert type(module.negative).__name__ == "TaniguchiChains"
    assert type(module.positive).__name__ == "ClampedLocalMode"
    assert bench.optimizer_of(module).param_groups[0]["lr"] == 1e-3
    assert dm.batch_size == 600
    assert module.hparams.matmul_precision == "bfloat16" and module.hparams.fused_kernels is True  # overrides
    # the key of the cached warm state follows the composed config
    assert bench.config_key(CONFIGS) != bench.config_key([CONFIGS[0], "configs/paper/mnist_binary/dbm_498.yaml"])


def _mnist() -> Path | None:
    root = Path(os.environ.get("QIDBM_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    return root if (root / "MNIST" / "raw").is_dir() else None


@pytest.mark.skipif(_mnist() is None, reason="MNIST not found under $QIDBM_DATA_DIR")
def test_one_counted_update_of_the_paper_dbm(tmp_path, monkeypatch):
    monkeypatch.setenv("QIDBM_DATA_DIR", str(_mnist()))
    bench = _load()
    res = bench.main(["--models", "dbm_498", "--warmup", "1", "--reps", "1", "--untimed", "0", "--variants", "float32",
                      "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    (row,) = res["rows"]
    assert row["s_per_update"] > 0 and row["pe"] > 0
    # one update: both phases' local searches and Gibbs sweeps, coupling, the loss and its gradient
    assert 20 < row["products"] < 400 and row["mm_calls"] > 50 and row["row_sweeps"] > 1200
    assert (tmp_path / "out" / "paper_update.md").read_text().count("| dbm_498 | float32 | off |") == 1
    assert list((tmp_path / "cache").glob("dbm_498_1updates_*.pt"))
