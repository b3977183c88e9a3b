"""scripts/mixing.py on a tiny trained QiDBM: equal-cost accounting, every measure written, clear errors."""

import argparse
import json
import sys
from pathlib import Path

import pytest

from qidbm.cli import main
from tests.test_cli import tiny_run  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import mixing  # noqa: E402


def test_samplers_at_equal_cost_write_every_measure(tiny_run, tmp_path, capsys):  # noqa: F811
    cfg, out = tiny_run
    main(["fit", "--config", str(cfg)])
    res = tmp_path / "mix"
    assert mixing.main([str(out / "checkpoints" / "last.ckpt"), "--sampler", "gibbs", "--sampler", "betas:1,0.5",
                        "--sampler", "fields:1,0.5,0", "--chains", "6", "--sweeps", "60", "--burn-in", "12",
                        "--out", str(res)]) == 0
    saved = json.loads(res.with_suffix(".json").read_text())
    by = {r["sampler"]: r for r in saved["results"]}
    assert set(by) == {"gibbs", "betas:1,0.5", "fields:1,0.5,0"}
    # K replicas make sweeps / K rounds; the burn-in is counted in sweeps too
    assert [(by[s]["replicas"], by[s]["rounds"], by[s]["recorded_rounds"]) for s in by] == [(1, 60, 48), (2, 30, 24), (3, 20, 16)]
    assert "swap_rates" not in by["gibbs"] and len(by["fields:1,0.5,0"]["swap_rates"]) == 2
    for r in by.values():
        assert r["tau_sweeps"] >= r["replicas"] * 0.5 and (r["tau_class_sweeps"] is None or r["tau_class_sweeps"] > 0) and r["class_switches_per_1000_sweeps"] >= 0
        assert isinstance(r["tau_reliable"], bool) and isinstance(r["tau_class_reliable"], bool)
        assert sum(r["final_class_fractions"]) == pytest.approx(1.0)
        assert 1 <= r["classes_visited_per_chain"] <= 10 and r["autocorrelation"][0] == pytest.approx(1.0)
    assert res.with_suffix(".png").stat().st_size > 1000
    assert "class switches per 1,000 sweeps" in capsys.readouterr().out


def test_bad_sampler_and_budget_are_clear_errors(capsys):
    with pytest.raises(argparse.ArgumentTypeError, match="gibbs, betas"):
        mixing.parse_sampler("tempered:1,0.5")
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated"):
        mixing.parse_sampler("betas:1,x")
    assert mixing.parse_sampler("fields:1,0") == ("fields", (1.0, 0.0))
    with pytest.raises(SystemExit):
        mixing.main(["x.ckpt", "--sampler", "gibbs", "--sweeps", "10", "--burn-in", "10", "--out", "o"])
    assert "must exceed --burn-in" in capsys.readouterr().err
