"""bench/recipe_speed.py: each recipe is built from its config files, and one timed and counted update
runs end to end (MNIST needed: skipped without it)."""

import json
import os
from pathlib import Path

import pytest

from tests.scripts import load_script

REPO = Path(__file__).resolve().parents[1]


def _load():
    return load_script("bench/recipe_speed.py")


def test_every_recipe_names_config_files_that_exist():
    for files in _load().RECIPES.values():
        assert all((REPO / f).is_file() for f in files), files


def test_unknown_recipe_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _load().main(["--recipes", "nope", "--out", str(tmp_path / "x")])
    assert "unknown recipe" in capsys.readouterr().err


def _mnist() -> Path | None:
    root = Path(os.environ.get("QIDBM_DATA_DIR", REPO.parent / "shared" / "data"))
    return root if (root / "MNIST" / "raw").is_dir() else None


@pytest.mark.skipif(_mnist() is None, reason="MNIST not found under $QIDBM_DATA_DIR")
def test_the_long_recipe_update_against_its_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("QIDBM_DATA_DIR", str(_mnist()))
    out = tmp_path / "speed"
    res = _load().main(["--recipes", "dbm_long_finetune", "--reps", "2", "--warmup", "1", "--profile",
                           "--out", str(out)])
    (row,) = res["rows"]
    # the recipe's own machine, estimator and precision, read from its configs
    assert (row["model"], row["negative"], row["batch"], row["precision"]) == ("DBM", "Mixture", 100, "bfloat16")
    assert row["step_s"] > 0 and row["share_of_limit"] == pytest.approx(row["limit_s"] / row["step_s"])
    # 100 chains x 20 sweeps from noise + 50 chains x 4 replicas x 20 sweeps: many products per update
    assert row["gflop"] > 10
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == res["rows"]
    md = out.with_suffix(".md").read_text()
    assert "| dbm_long_finetune | DBM | Mixture |" in md
    assert "aten::mm" in row["profile"] and "Profile of dbm_long_finetune" in md  # the products are in the profile
