"""scripts/seed_table.py: per-group mean and sample std, paired differences by seed, on known numbers."""

import json
import statistics
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import seed_table  # noqa: E402


def write(path: Path, fid: float, step: int) -> str:
    path.write_text(json.dumps({"fid": fid, "global_step": step, "num_samples": 10000, "sampling": "num_steps=20",
                                "class_coverage": {"classes_in_range": 10, "max_fraction": 0.14}}))
    return str(path)


def test_means_stds_and_paired_differences(tmp_path):
    a = [write(tmp_path / f"fid_dbm_s{s}.json", f, 100 + s) for s, f in enumerate([20.0, 24.0, 22.0])]
    b = [write(tmp_path / f"fid_qidbm_s{s}.json", f, 90 + s) for s, f in enumerate([25.0, 23.0, 27.0])]
    out = tmp_path / "t.md"
    assert seed_table.main(["--group", "DBM", *a, "--group", "QiDBM", *b, "--out", str(out)]) == 0
    text = out.read_text()
    assert f"| DBM | 3 | 22.00 | {statistics.stdev([20, 24, 22]):.2f} |" in text
    assert f"| QiDBM | 3 | 25.00 | {statistics.stdev([25, 23, 27]):.2f} |" in text
    assert "+5.00, -1.00, +5.00; mean +3.00" in text  # QiDBM - DBM per seed 0, 1, 2
    assert "| QiDBM | 1 | 91 | 23.00 | 10000 | 10/10 | 14.0 % |" in text


def test_a_file_without_fid_is_a_clear_error(tmp_path):
    f = tmp_path / "e_s0.json"
    f.write_text(json.dumps({"fid": None}))
    with pytest.raises(ValueError, match="no FID"):
        seed_table.main(["--group", "X", str(f)])
