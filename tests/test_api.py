"""The Python API (qidbm.load / qidbm.sample / qidbm.evaluate): the same samples as `qidbm sample`, every
shipped checkpoint loads, evaluate returns its documented keys, bad settings fail before any work."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import qidbm
from qidbm.api import PRESETS, Loaded, SampleMemoryError, SettingError
from qidbm.cli import main
from qidbm.models import RBM
from qidbm.samplers.drawing import SamplingSpec, draw, trained_sampling

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "checkpoints").glob("*.ckpt"))
DBM = REPO / "checkpoints" / "dbm_mnist_binary.ckpt"
FID_WEIGHTS = REPO.parent / "shared" / "fid" / "pt_inception-2015-12-05-6726825d.pth"
DATA = REPO.parent / "shared" / "data"


def test_four_checkpoints_are_shipped():
    assert {p.stem for p in SHIPPED} >= {"dbm_mnist_binary", "qidbm_mnist_binary", "grbm_mnist", "qgrbm_mnist"}


@pytest.mark.parametrize("flag", ["--ckpt_path", "--ckpt"])
def test_sample_equals_the_command_line(tmp_path, flag, capsys):
    """qidbm.sample(path, n, seed) returns the images `qidbm sample` writes (both spellings of the flag)."""
    out = tmp_path / "s"
    assert main(["sample", flag, str(DBM), "--num-samples", "6", "--seed", "5", "--out", str(out)]) == 0
    written = np.load(out / "samples.npy")
    images = qidbm.sample(str(DBM), 6, seed=5)
    assert images.shape == (6, 1, 28, 28) and images.dtype == torch.float32
    np.testing.assert_array_equal(images.numpy(), written)
    assert "num_steps=50" in capsys.readouterr().out  # the sweeps the shipped DBM records


def test_sample_defaults_are_the_trained_protocol_not_the_plain_draw():
    """The default is the machine's trained sampling (50 sweeps from noise, its visible mode), built here
    from the lower-level pieces; the plain SamplingSpec() (1,000 sweeps, means) gives other images."""
    images = qidbm.sample(DBM, 5, seed=1)
    m = qidbm.load(DBM)
    spec = trained_sampling(m.hparams, m.model.gaussian_visible)
    assert (spec.num_steps, spec.start, spec.output) == (50, "noise", "mode")
    g = torch.Generator().manual_seed(1)
    x, _ = draw(m.model, 5, spec, generator=g)
    np.testing.assert_array_equal(images.numpy(), x.view(5, 1, 28, 28).numpy())
    assert set(images.unique().tolist()) <= {0.0, 1.0}  # binary visible modes, not means
    plain = qidbm.sample(m, 5, seed=1, sampling=SamplingSpec(num_steps=2))
    assert not torch.equal(plain, images) and not set(plain.unique().tolist()) <= {0.0, 1.0}  # mean read-out


def test_sample_seed_overrides_and_sources(tmp_path):
    m = qidbm.load(DBM)
    a, b, c = qidbm.sample(m, 4, seed=0), qidbm.sample(m, 4, seed=0), qidbm.sample(m, 4, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(qidbm.sample(DBM, 4, seed=0), a)  # a path or the loaded object: the same images
    means = qidbm.sample(m, 4, seed=0, num_steps=3, output="mean")
    assert means.shape == (4, 1, 28, 28) and 0 <= float(means.min()) and float(means.max()) <= 1
    assert not set(means.unique().tolist()) <= {0.0, 1.0}
    # a bare machine: no data info, so visible vectors [n, n_visible]; its defaults are SamplingSpec()'s
    rbm = RBM(12, 5)
    v = qidbm.sample(rbm, 7, seed=0, num_steps=2, output="sample")
    assert v.shape == (7, 12) and set(v.unique().tolist()) <= {0.0, 1.0}
    assert Loaded.from_model(rbm).sampling == SamplingSpec()
    # a module: its machine, its hyperparameters' sampling and its data info
    from qidbm.lightning import BoltzmannModule

    module = BoltzmannModule(RBM(12, 5))
    assert qidbm.sample(module, 3, num_steps=1).shape == (3, 12)


def test_sample_settings_fail_before_any_sampling(monkeypatch):
    import qidbm.samplers.drawing as drawing

    monkeypatch.setattr(drawing, "draw", lambda *a, **k: pytest.fail("sampled despite a bad setting"))
    with pytest.raises(SettingError, match="n must be a positive integer, got 0"):
        qidbm.sample(DBM, 0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'steps'"):
        qidbm.sample(DBM, 2, steps=3)
    from qidbm import preflight

    monkeypatch.setattr(preflight, "available_memory_bytes", lambda: 10**9)
    with pytest.raises(SampleMemoryError, match=r"^n 1000000 needs about 9\.4 GB .*different seed give more"):
        qidbm.sample(DBM, 1_000_000)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_load_every_shipped_checkpoint(path):
    m = qidbm.load(path)
    assert isinstance(m, Loaded) and m.path == path and m.device == torch.device("cpu")
    assert type(m.model).__name__ == m.info["model_class"] and not m.model.training
    assert m.data_info["dataset"] == "MNIST" and m.data_info["image_shape"] == [1, 28, 28]
    assert m.sampling == trained_sampling(m.hparams, m.model.gaussian_visible)
    steps = m.hparams.get("sample_steps") or 20  # the recorded sweeps, else the training chains' 20
    assert m.sampling.num_steps == steps and m.sampling.start == "noise"
    assert m.info["global_step"] > 0 and "MNIST" in repr(m) and f"num_steps={steps}" in repr(m)
    x = qidbm.sample(m, 2, seed=0, num_steps=1)
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all() and 0 <= float(x.min()) and float(x.max()) <= 1


def test_load_errors_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        qidbm.load(tmp_path / "missing.ckpt")
    m = qidbm.load(DBM)
    with pytest.raises(ValueError, match="move it first"):
        qidbm.sample(m, 2, device="meta")


def test_api_names_stay_functions_after_the_command_modules_load():
    from qidbm.commands.evaluate import cmd_evaluate  # noqa: F401  the modules of `qidbm sample` / `qidbm evaluate`
    from qidbm.commands.sample import cmd_sample  # noqa: F401

    import qidbm.api

    assert qidbm.sample is qidbm.api.sample and qidbm.evaluate is qidbm.api.evaluate and qidbm.load is qidbm.api.load
    assert sys.modules["qidbm.commands.sample"].cmd_sample is cmd_sample


def test_import_qidbm_cli_still_does_not_import_torch():
    code = "import sys, qidbm, qidbm.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------- evaluate
EVALUATE_KEYS = {"checkpoint", "model", "model_config", "epoch", "global_step", "preset", "estimated_seconds",
                 "seconds", "fid", "fid_backend", "fid_reference", "sampling", "num_samples", "sampling_seconds",
                 "fid_seconds", "class_coverage", "precision_recall", "copying", "log_z", "log_z_stderr",
                 "ais_runs", "ais_betas", "test_log_likelihood", "test_log_likelihood_sem", "test_examples"}


@pytest.mark.skipif(not FID_WEIGHTS.is_file(), reason=f"FID weights not found at {FID_WEIGHTS}")
@pytest.mark.skipif(not (DATA / "MNIST").is_dir(), reason=f"MNIST not found in {DATA}")
def test_evaluate_tiny_returns_the_documented_keys(monkeypatch):
    monkeypatch.setenv("QIDBM_DATA_DIR", str(DATA))
    m = qidbm.load(DBM)
    lines: list[str] = []
    r = qidbm.evaluate(m, preset="quick", num_samples=12, fid_reference_size=12, prc_samples=6, copy_samples=6,
                       ais_runs=2, ais_betas=5, ais_test_examples=8, fid_weights=FID_WEIGHTS, log=lines.append)
    assert EVALUATE_KEYS <= set(r), EVALUATE_KEYS - set(r)
    json.dumps(r)  # JSON-able, as `qidbm evaluate --json` writes it
    assert r["preset"] == "quick" and r["num_samples"] == 12 and r["fid_reference"] == "test (first 12)"
    assert r["fid"] > 0 and math.isfinite(r["test_log_likelihood"]) and r["test_examples"] == 8
    assert r["ais_runs"] == 2 and r["ais_betas"] == 5 and r["copying"]["samples"] == 6
    assert r["precision_recall"]["samples"] == 6 and sum(r["class_coverage"]["fractions"]) == pytest.approx(1, abs=1e-3)
    assert "num_steps=50" in r["sampling"] and r["checkpoint"] is None and r["model"] == "DBM"
    est = r["estimated_seconds"]
    assert set(est) == {"sampling", "inception", "frechet", "ais", "log_likelihood", "total"} and est["total"] > 0
    assert lines[1].startswith("estimated run time: about") and lines[-1].startswith("done in")
    assert any(line.startswith("FID (pytorch-fid, 12 samples vs MNIST test (first 12)") for line in lines)
    assert m.model.layer_bias(0).dtype == torch.float32  # AIS ran on a float64 copy, not on the caller's machine


def test_evaluate_without_fid_or_data_gives_log_z(tmp_path):
    r = qidbm.evaluate(RBM(10, 4), fid=False, ais_runs=3, ais_betas=4)
    assert {"log_z", "log_z_stderr", "ais_runs", "ais_betas", "estimated_seconds", "seconds"} <= set(r)
    assert "fid" not in r and "test_log_likelihood" not in r and r["ais_runs"] == 3 and math.isfinite(r["log_z"])


def test_presets_are_as_documented():
    assert PRESETS["quick"] == {"num_samples": 1000, "fid_reference_size": 1000, "prc_samples": 0, "copy_samples": 1000,
                                "ais_runs": 16, "ais_betas": 1000, "ais_test_examples": 1000}
    assert PRESETS["paper"] == {"samplings": "paper"}
    from qidbm.api import EVALUATION_DEFAULTS, _paper_samplings

    assert EVALUATION_DEFAULTS["num_samples"] == 10000 and EVALUATION_DEFAULTS["ais_betas"] == 10000
    taniguchi, gibbs = _paper_samplings(None, 1000)
    assert (taniguchi.num_steps, taniguchi.output, gibbs.num_steps, gibbs.output) == (0, "local_search", 1000, "mean")
    for line in ("``\"quick\"``: 1,000 samples against the first 1,000 test images", "16 chains x 1,000 distributions"):
        assert line in " ".join(qidbm.evaluate.__doc__.split())


@pytest.mark.parametrize("kwargs,python,cli", [
    ({"ais_runs": 1}, "ais_runs must be 0 (no AIS) or at least 2, got 1", "--ais-runs must be 0 (no AIS) or at least 2"),
    ({"ais_test_examples": 0}, "ais_test_examples must be a positive number", "--ais-test-examples must be a positive"),
    ({"preset": "fast"}, "preset must be one of ['paper', 'quick']", "--preset must be one of"),
    ({"preset": "paper", "num_steps": 5}, "the paper preset fixes its two samplings; leave num_steps unset",
     "leave --num-steps unset"),
    ({"fid_reference_size": 1}, "fid_reference_size must be at least 2", "--fid-reference-size must be at least 2"),
])
def test_evaluate_settings_fail_before_loading(tmp_path, kwargs, python, cli):
    from qidbm.commands.sample import cli_flag

    with pytest.raises(SettingError) as e:
        qidbm.evaluate(tmp_path / "not-read.ckpt", **kwargs)  # the file does not exist: nothing was loaded
    assert python in str(e.value) and cli in e.value.message(cli_flag)


@pytest.mark.skipif(not (DATA / "MNIST").is_dir(), reason=f"MNIST not found in {DATA}")
def test_evaluate_command_accepts_both_flags_and_prints_an_estimate(capsys, monkeypatch):
    monkeypatch.setenv("QIDBM_DATA_DIR", str(DATA))
    for flag in ("--ckpt_path", "--ckpt"):
        assert main(["evaluate", flag, str(DBM), "--no-fid", "--ais-runs", "2", "--ais-betas", "3",
                     "--ais-test-examples", "4"]) == 0
        out = capsys.readouterr().out
        assert "model: DBM" in out and "estimated run time: about" in out and "log Z" in out


@pytest.mark.skipif(not FID_WEIGHTS.is_file(), reason=f"FID weights not found at {FID_WEIGHTS}")
@pytest.mark.skipif(not (DATA / "MNIST").is_dir(), reason=f"MNIST not found in {DATA}")
def test_evaluate_paper_preset_scores_both_samplings(monkeypatch):
    monkeypatch.setenv("QIDBM_DATA_DIR", str(DATA))
    r = qidbm.evaluate(DBM, preset="paper", num_samples=4, fid_reference_size=4, prc_samples=0, copy_samples=0,
                       ais_runs=0, fid_weights=FID_WEIGHTS)
    first, second = r["samplings"]
    assert "num_steps=0" in first["sampling"] and "output=local_search" in first["sampling"]
    assert "num_steps=1000" in second["sampling"] and "output=mean" in second["sampling"]
    assert r["fid"] == first["fid"] != second["fid"] and r["checkpoint"] == str(DBM) and r["preset"] == "paper"
