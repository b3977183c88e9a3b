"""A kill or an error during a checkpoint save never leaves a corrupt `last.ckpt`.

Faults injected: (1) ``torch.save`` writes part of the file and then raises (a full disk, a
signal); (2) a real SIGKILL of a process that is saving a 16 MB checkpoint over and over. The old
file must stay complete and loadable, and no temporary file may replace it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import lightning as L
import pytest
import torch

from qidbm.lightning.reliability import AtomicCheckpointIO, atomic_torch_save


def _partial_then_raise(obj, f, *a, **k):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(28, "No space left on device")


def test_failure_mid_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.arange(5.0)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _partial_then_raise)
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"step": 2, "w": torch.zeros(5)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["step"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]  # the temporary file was removed


def test_plugin_keeps_old_last_ckpt_when_trainer_save_fails(tmp_path, monkeypatch):
    from torch.utils.data import DataLoader, TensorDataset

    from qidbm.lightning import BoltzmannModule
    from qidbm.models import RBM

    t = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, plugins=[AtomicCheckpointIO()], default_root_dir=str(tmp_path))
    t.fit(BoltzmannModule(RBM(6, 3)), DataLoader(TensorDataset((torch.rand(16, 6) < 0.5).float()), batch_size=8))
    last = tmp_path / "last.ckpt"
    t.save_checkpoint(last)
    good = last.read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert last.stat().st_mode & 0o777 == 0o666 & ~umask  # what open() would give, not mkstemp's 0600
    monkeypatch.setattr(torch, "save", _partial_then_raise)
    with pytest.raises(OSError):
        t.save_checkpoint(last)
    monkeypatch.undo()
    assert last.read_bytes() == good and torch.load(last, weights_only=True)["global_step"] == 2


def test_truncated_checkpoint_load_names_the_file(tmp_path):
    p = tmp_path / "cut.ckpt"
    atomic_torch_save({"w": torch.randn(1000)}, p)
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"could not read checkpoint .*cut\.ckpt.*truncated"):
        AtomicCheckpointIO().load_checkpoint(p)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "nope.ckpt")


SAVER = textwrap.dedent("""
    import sys, torch
    from qidbm.lightning.reliability import AtomicCheckpointIO
    io, path = AtomicCheckpointIO(), sys.argv[1]
    i = 0
    while True:
        i += 1
        io.save_checkpoint({"i": i, "w": torch.full((4_000_000,), float(i))}, path)
        print(i, flush=True)
""")


def test_sigkill_during_save_leaves_a_complete_file(tmp_path):
    """SIGKILL a process that saves 16 MB checkpoints back to back (each save takes ~10-50 ms)."""
    path = tmp_path / "last.ckpt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "1"  # one complete save, the next one is under way
        time.sleep(0.017)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    ck = torch.load(path, weights_only=True)  # complete: loads, and is one consistent save
    assert ck["i"] >= 1 and torch.equal(ck["w"], torch.full((4_000_000,), float(ck["i"])))
    # a killed writer may leave its own temporary file, never a partial last.ckpt
    assert {p.name for p in tmp_path.iterdir()} - {"last.ckpt"} <= {p.name for p in tmp_path.glob(".last.ckpt.*.tmp")}
