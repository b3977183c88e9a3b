"""scripts/device_paper.py's logic at a tiny size on the CPU (the real run needs a lent GPU)."""

import json
import sys
from pathlib import Path

from tests.test_cli import make_tiny_mnist

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import device_paper  # noqa: E402


def test_tiny_device_run_trains_evaluates_and_reports_both_models(tmp_path, monkeypatch):
    monkeypatch.setenv("QIDBM_DATA_DIR", str(make_tiny_mnist(tmp_path / "data", n_train=1800)))  # 3 batches of 600
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    assert device_paper.main(["--tiny", "--out", str(out), "--minutes", "2"]) == 0
    res = json.loads((out / "device_paper.json").read_text())
    assert [r["model"] for r in res["rows"]] == ["dbm", "qidbm"]
    for r in res["rows"]:
        assert r["updates"] == 3 and r["fraction_of_paper_schedule"] == 3 / 100_000
        assert "--trainer.max_time 00:00:02:00" in r["fit_command"] and "configs/paper/mnist_binary/base.yaml" in r["fit_command"]
        assert (out / f"{r['model']}_498" / "checkpoints" / "last.ckpt").is_file()
        assert r["evaluate"]["model"] == ("QiDBM" if r["model"] == "qidbm" else "DBM")
    assert "% of the paper's 100,000" in (out / "device_paper.md").read_text()


def test_tiny_celeba_device_run_trains_evaluates_and_reports_grbm_and_qgrbm(tmp_path, monkeypatch):
    from qidbm.data.testing import make_celeba_folder

    make_celeba_folder(tmp_path / "data", partition=(0,) * 12 + (2,) * 4)
    monkeypatch.setenv("QIDBM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    assert device_paper.main(["--recipe", "celeba32", "--tiny", "--out", str(out), "--minutes", "2"]) == 0
    res = json.loads((out / "device_paper.json").read_text())
    assert res["recipe"] == "celeba32" and [r["model"] for r in res["rows"]] == ["grbm", "qgrbm"]
    for r in res["rows"]:
        assert r["updates"] == 3 and r["fraction_of_paper_schedule"] == 3 / 63_600
        assert "configs/paper/grbm/celeba32_" in r["fit_command"]
        assert (out / r["run"] / "checkpoints" / "last.ckpt").is_file()
        assert r["evaluate"]["model"] == r["model"].upper()
        assert "celeba" in (out / r["run"] / "logs" / "version_0" / "config.yaml").read_text().lower()
    assert "GRBM vs QGRBM" in (out / "device_paper.md").read_text()
    with __import__("pytest").raises(SystemExit):
        device_paper.main(["--recipe", "celeba32", "--models", "dbm", "--tiny", "--out", str(out)])


def test_tiny_mnist_grbm_device_run_names_its_configs_and_schedule(tmp_path, monkeypatch):
    monkeypatch.setenv("QIDBM_DATA_DIR", str(make_tiny_mnist(tmp_path / "data", n_train=12)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    assert device_paper.main(["--recipe", "mnist_grbm", "--models", "grbm", "--tiny", "--out", str(out),
                              "--minutes", "2", "--fid-samples", "8"]) == 0
    (r,) = json.loads((out / "device_paper.json").read_text())["rows"]
    assert r["updates"] == 3 and r["fraction_of_paper_schedule"] == 3 / 23_600
    assert "configs/paper/grbm/mnist_grbm.yaml" in r["fit_command"] and r["evaluate"]["model"] == "GRBM"
