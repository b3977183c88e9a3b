"""scripts/quality_curve.py on a tiny run: every checkpoint scored, training time read from Lightning's Timer."""

import json
import sys
from pathlib import Path

import pytest
import torch

from qidbm.cli import main
from tests.test_cli import FID_WEIGHTS, tiny_run  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import quality_curve  # noqa: E402


@pytest.mark.skipif(not FID_WEIGHTS.is_file(), reason=f"FID weights not found at {FID_WEIGHTS}")
def test_quality_curve_scores_every_checkpoint_against_training_time(tiny_run, tmp_path, capsys):  # noqa: F811
    cfg, out = tiny_run
    main(["fit", "--config", str(cfg), "--trainer.max_time", "00:00:05:00", "--trainer.max_epochs", "2",
          "--model.init_args.negative", "qidbm.estimators.FromNoise",
          "--model.init_args.negative.init_args.sweeps", "2",
          "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", str(out / "checkpoints"),
          "--trainer.callbacks.every_n_train_steps", "2", "--trainer.callbacks.save_top_k", "-1",
          "--trainer.callbacks.filename", "{step}"])
    res = tmp_path / "q"
    assert quality_curve.main([str(out), "--fid-samples", "12", "--coverage-samples", "12", "--fid-weights",
                               str(FID_WEIGHTS), "--data-root", str(tmp_path / "data"), "--out", str(res)]) == 0
    rows = json.loads(res.with_suffix(".json").read_text())["rows"]
    assert [r["global_step"] for r in rows] == [2, 4, 6]
    secs = [r["train_seconds"] for r in rows]
    # each row's time is the elapsed training time its checkpoint's Timer recorded (a tiny run on an idle
    # machine may take less than the 0.1 s the rows are rounded to, so no lower bound on the values)
    assert secs == sorted(secs)
    for r in rows:
        raw = torch.load(out / "checkpoints" / f"step={r['global_step']}.ckpt", map_location="cpu", weights_only=False)
        assert quality_curve.training_seconds(raw) is not None
        assert r["train_seconds"] == pytest.approx(quality_curve.training_seconds(raw), abs=0.051)
    assert all(r["fid"] > 0 and r["fid_samples"] == 12 and "start=noise" in r["sampling"] for r in rows)
    assert sum(rows[-1]["coverage"]["fractions"]) == pytest.approx(1, abs=1e-3)
    assert res.with_suffix(".png").stat().st_size > 1000
    # the paper's protocol: the two lowest-FID checkpoints re-scored on fresh samples, the lower kept
    res2 = tmp_path / "q2"
    assert quality_curve.main([str(out), "--fid-samples", "12", "--coverage-samples", "12", "--fid-weights",
                               str(FID_WEIGHTS), "--data-root", str(tmp_path / "data"), "--out", str(res2),
                               "--x", "epoch", "--rescore", "2", "--rescore-samples", "16"]) == 0
    saved = json.loads(res2.with_suffix(".json").read_text())
    assert [r["fid"] for r in saved["rows"]] == [r["fid"] for r in rows]   # same seed, same curve
    (best,) = saved["best"]
    lowest = sorted(rows, key=lambda r: r["fid"])[:2]
    assert [r["checkpoint"] for r in best["rescored"]] == [r["checkpoint"] for r in lowest]
    assert all(r["fid_samples"] == 16 and r["fid"] != r["fid_curve"] for r in best["rescored"])
    assert best["fid"] == min(r["fid"] for r in best["rescored"])
    assert "| min FID |" in capsys.readouterr().out
    # another read-out than the machine's own
    res3 = tmp_path / "q3"
    assert quality_curve.main([str(out), "--fid-samples", "12", "--coverage-samples", "12", "--fid-weights",
                               str(FID_WEIGHTS), "--data-root", str(tmp_path / "data"), "--out", str(res3),
                               "--every", "3", "--output", "mode"]) == 0
    mode_rows = json.loads(res3.with_suffix(".json").read_text())["rows"]
    assert all("output=mode" in r["sampling"] for r in mode_rows) and "output=sample" in rows[0]["sampling"]
    # the plot again from the JSON alone
    again = tmp_path / "again"
    assert quality_curve.main(["--replot", str(res.with_suffix(".json")), "--out", str(again)]) == 0
    assert again.with_suffix(".png").stat().st_size > 1000


def test_run_labels_name_the_model_and_the_run_folder():
    rows = [{"run": "/w/runs18/dbm_s1/lightning_logs/version_0", "model": "DBM"}]
    assert quality_curve.run_label(rows) == "DBM (dbm_s1)"
    assert quality_curve.run_label([{"run": "runs/q", "model": "QiDBM"}]) == "QiDBM (q)"
    assert quality_curve.run_label([{"run": "runs/long_s0+runs/longft_s0", "model": "DBM"}]) == "DBM (long_s0)"


def test_a_run_resumed_into_another_folder_is_one_run(tiny_run, tmp_path):  # noqa: F811
    # A holds updates 2 and 4, B (the resume's folder) 4 and 6: one run of updates 2, 4, 6, B's 4 winning;
    # its clock starts when A's fit started (config.yaml), not at A's first checkpoint
    import os
    import shutil

    cfg, out = tiny_run
    main(["fit", "--config", str(cfg), "--trainer.max_epochs", "2",
          "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", str(out / "checkpoints"),
          "--trainer.callbacks.every_n_train_steps", "2", "--trainer.callbacks.save_top_k", "-1",
          "--trainer.callbacks.filename", "{step}"])
    a, b = tmp_path / "A", tmp_path / "B"
    for folder, steps in ((a, (2, 4)), (b, (4, 6))):
        (folder / "checkpoints").mkdir(parents=True)
        for k in steps:
            shutil.copy(out / "checkpoints" / f"step={k}.ckpt", folder / "checkpoints")
    (a / "lightning_logs" / "version_0").mkdir(parents=True)
    (a / "lightning_logs" / "version_0" / "config.yaml").write_text("{}")
    os.utime(a / "lightning_logs" / "version_0" / "config.yaml", (1000.0, 1000.0))
    assert quality_curve.run_checkpoints(f"{a}+{b}") == [a / "checkpoints" / "step=2.ckpt",
                                                        b / "checkpoints" / "step=4.ckpt", b / "checkpoints" / "step=6.ckpt"]
    assert quality_curve.run_start(a) == 1000.0 and quality_curve.run_start(b) is None


def test_no_runs_and_no_replot_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        quality_curve.main(["--out", "x"])
    assert "give run folders" in capsys.readouterr().err


def test_abscissae_are_minutes_epochs_or_updates():
    row = {"train_seconds": 90.0, "epoch": 4, "global_step": 500}
    assert [quality_curve.x_value(row, x) for x in ("time", "epoch", "step")] == [1.5, 5, 500]
