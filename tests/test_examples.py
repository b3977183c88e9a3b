"""Every script in examples/ runs, at a tiny size, as a user runs it: ``python examples/X.py ...`` in a
subprocess whose working directory is a temporary folder (outputs land there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DATA = Path(os.environ.get("QIDBM_DATA_DIR") or REPO.parent / "shared" / "data")
FID_WEIGHTS = REPO.parent / "shared" / "fid" / "pt_inception-2015-12-05-6726825d.pth"

#: each script's tiny run, and the files it must write (relative to its working directory)
TINY = {
    "train_qidbm.py": (["--max-steps", "2", "--hidden", "8", "4", "--num-samples", "4", "--batch-size", "20",
                        "--out", "run"], ["run/samples.png", "run/qidbm.ckpt"]),
    "sample_checkpoint.py": (["--num-samples", "4", "--num-steps", "2", "--out", "grid.png"], ["grid.png"]),
    "evaluate_checkpoint.py": (["--num-samples", "8", "--fid-reference-size", "8", "--copy-samples", "4",
                                "--ais-runs", "2", "--ais-betas", "5", "--ais-test-examples", "8"]
                               + ([] if FID_WEIGHTS.is_file() else ["--no-fid"]), []),
    "own_data_digits.py": (["--max-steps", "2", "--num-samples", "4", "--out", "run"], ["run/samples.png"]),
}


def test_every_example_has_a_tiny_run():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(TINY)


def run_example(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "QIDBM_DATA_DIR": str(DATA), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    if FID_WEIGHTS.is_file():
        env["QIDBM_FID_WEIGHTS"] = str(FID_WEIGHTS)
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.skipif(not (DATA / "MNIST").is_dir(), reason=f"MNIST not found in {DATA}")
@pytest.mark.parametrize("name", sorted(TINY))
def test_example_runs(name, tmp_path):
    args, outputs = TINY[name]
    r = run_example(name, args, tmp_path)
    assert r.returncode == 0, f"python examples/{name} {' '.join(args)} failed:\n{r.stderr[-4000:]}"
    for out in outputs:
        assert (tmp_path / out).is_file() and (tmp_path / out).stat().st_size > 0, f"{name} did not write {out}"
    if name == "evaluate_checkpoint.py":  # the results dict, printed as JSON after the report
        results = json.loads(r.stdout[r.stdout.index("\n{") + 1:])
        assert results["preset"] == "quick" and results["ais_runs"] == 2 and "test_log_likelihood" in results
        assert ("fid" in results) == FID_WEIGHTS.is_file() and "estimated run time" in r.stdout
    if name == "train_qidbm.py":  # its checkpoint is a qidbm checkpoint like any other
        import qidbm

        assert qidbm.load(tmp_path / "run" / "qidbm.ckpt").info["model_class"] == "QiDBM"
