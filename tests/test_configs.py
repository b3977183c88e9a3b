"""Every config under configs/ runs: it parses (``--print_config``) and trains two steps.

Each recipe folder is ``base.yaml`` plus one model file (overlays such as ``wide.yaml`` and
``tempered_finetune.yaml``, and the files of an overlay folder such as ``gamma/``, are added to a model
file of their recipe); the other files stand alone.
The two steps run at the recipe's settings except the batch (8 rows) and the run folder (tmp); the
CelebA files train on a generated folder in torchvision's layout. The runs of the 6,272-unit bit-plane
machines (about 30 s each) are marked slow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from qidbm.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
# overlays that go on their recipe's base.yaml and these files (a model file, or a model file and a first stage)
OVERLAYS = {"wide.yaml": "mnist_grbm.yaml", "tempered_finetune.yaml": "dbm_498.yaml", "long.yaml": "dbm_498.yaml",
            "tempered_finetune_fields.yaml": "qidbm_498.yaml", "long_finetune.yaml": ("dbm_498.yaml", "long.yaml")}
# folders of overlays inside a recipe folder: each file goes on the recipe's base and this model file
OVERLAY_FOLDERS = {"paper/mnist_binary/gamma": "qidbm_498.yaml", "cpu/grbm/gamma": "mnist_qgrbm.yaml"}
SLOW = ("mnist_bitplanes",)


def combinations() -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for path in sorted(CONFIGS.rglob("*.yaml")):
        rel = str(path.relative_to(CONFIGS))
        if path.parent.name == "loggers":
            out.append(("quickstart.yaml", rel))
        elif str(path.parent.relative_to(CONFIGS)) in OVERLAY_FOLDERS:
            folder = str(path.parent.parent.relative_to(CONFIGS))
            out.append((f"{folder}/base.yaml", f"{folder}/{OVERLAY_FOLDERS[str(path.parent.relative_to(CONFIGS))]}", rel))
        elif (path.parent / "base.yaml").is_file():
            if path.name == "base.yaml":
                continue
            folder = str(path.parent.relative_to(CONFIGS))
            if path.name in OVERLAYS:
                under = OVERLAYS[path.name]
                under = (under,) if isinstance(under, str) else under
                out.append((f"{folder}/base.yaml", *(f"{folder}/{u}" for u in under), rel))
            else:
                out.append((f"{folder}/base.yaml", rel))
        else:
            out.append((rel,))
    return out


def test_every_config_file_is_covered():
    covered = {c for combo in combinations() for c in combo}
    assert covered == {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}


def _args(combo) -> list[str]:
    return [a for c in combo for a in ("--config", str(CONFIGS / c))]


def _marks(combo):
    return [pytest.mark.slow] if any(s in c for c in combo for s in SLOW) else []


@pytest.mark.parametrize("combo", combinations(), ids="+".join)
def test_print_config(combo, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["fit", *_args(combo), "--print_config"])
    assert e.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"]


def _overrides(combo, tmp_path) -> list[str]:
    text = "".join((CONFIGS / c).read_text() for c in combo)
    out = []
    if "cooldown_steps" in text:  # a cool-down must fit in the run
        out += ["--model.init_args.lr_schedule.init_args.cooldown_steps", "1"]
    if "NextStage" in text:  # the second stage starts at the second step (its callback is the last in the list)
        out += ["--model.init_args.lr_schedule.init_args.end_step", "1", "--trainer.callbacks.init_args.at_step", "1",
                "--trainer.callbacks.init_args.lr_schedule.init_args.cooldown_steps", "1"]
    return out + _data_overrides(text, tmp_path)


def _data_overrides(text: str, tmp_path) -> list[str]:
    if "CelebA" in text:
        from qidbm.data.testing import make_celeba_folder

        make_celeba_folder(tmp_path / "celeba_root", partition=(0,) * 12 + (1,) * 2 + (2,) * 6)
        return ["--data.init_args.root", str(tmp_path / "celeba_root"), "--data.init_args.download", "false",
                "--data.init_args.batch_size", "4"]
    if "ArrayDataModule" in text:
        from sklearn.datasets import load_digits

        np.save(tmp_path / "digits.npy", (load_digits().data / 16.0).astype(np.float32))
        return ["--data.init_args.path", str(tmp_path / "digits.npy"), "--data.init_args.batch_size", "8"]
    if "VMCModule" in text or "nqs" in text:
        return []
    return ["--data.init_args.batch_size", "8"]


@pytest.mark.parametrize("combo", [pytest.param(c, marks=_marks(c)) for c in combinations()], ids="+".join)
def test_two_training_steps(combo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs' relative run folders land here
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("QIDBM_DATA_DIR", os.environ.get("QIDBM_DATA_DIR", str(REPO.parent / "shared" / "data")))
    assert 0 == main(["fit", *_args(combo), *_overrides(combo, tmp_path), "--trainer.max_steps", "2",
          "--trainer.max_time", "null", "--trainer.max_epochs", "-1", "--trainer.enable_progress_bar", "false"])
    assert list(tmp_path.rglob("*.ckpt")) or "nqs" in combo[0]
