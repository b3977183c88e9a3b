"""bench/scaling.py end to end at a tiny size: one row per model, size and batch, the limit beside the time."""

import json

import pytest

from tests.scripts import load_script



def _load():
    return load_script("bench/scaling.py")


@pytest.mark.parametrize("workload", ["pcd1", "recipe"])
def test_scaling_table(tmp_path, workload):
    scaling = _load()
    out = tmp_path / "scaling"
    res = scaling.main(["--sizes", "8,12", "--batches", "4,6", "--reps", "2", "--workload", workload, "--out", str(out)])
    rows = res["rows"]
    assert [(r["model"], r["sizes"][1], r["batch"]) for r in rows] == [
        (m, s, b) for s in (8, 12) for b in (4, 6) for m in ("DBM", "QiDBM")
    ]
    for r in rows:
        assert r["step_s"] > 0 and r["limit_s"] > 0 and r["ratio"] == pytest.approx(r["limit_s"] / r["step_s"])
    # every product of a step has the batch as one dimension, and the quantum layer adds none
    flop = {(r["model"], r["sizes"][1], r["batch"]): r["gflop"] for r in rows}
    for s in (8, 12):
        assert flop["DBM", s, 6] == pytest.approx(1.5 * flop["DBM", s, 4], rel=1e-12)
        assert flop["QiDBM", s, 4] == flop["DBM", s, 4]
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["rows"] == rows and saved["workload"] == workload
    md = out.with_suffix(".md").read_text()
    assert md.count("| QiDBM |") == 4 and "quantum / classical" in md


def test_bad_reps_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit):
        _load().main(["--reps", "1", "--out", str(tmp_path / "x")])
