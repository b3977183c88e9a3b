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

from qidbm.checkpoint import atomic_torch_save
from qidbm.lightning.checkpoint_io import AtomicCheckpointIO


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
    from qidbm.lightning.checkpoint_io import AtomicCheckpointIO
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


# ---------------------------------------------------------------- the cause of a failed save is the error shown
class _FailingFile:
    """A file whose writes fail with ``exc`` once ``limit`` bytes went through (a full disk, or a SIGINT
    arriving mid-write): torch's real zip writer then fails to close the archive with its own
    ``enforce fail ... unexpected pos`` error, which used to be the last error shown."""

    def __init__(self, f, limit, exc):
        self.f, self.n, self.limit, self.exc = f, 0, limit, exc

    def write(self, b):
        self.n += len(b)
        if self.n > self.limit:
            raise self.exc
        return self.f.write(b)

    def flush(self):
        self.f.flush()

    def fileno(self):
        return self.f.fileno()


def _fail_saves(monkeypatch, exc, from_call=1, limit=2000):
    real, calls = torch.save, {"n": 0}

    def save(obj, f, *a, **k):
        if isinstance(f, (str, os.PathLike)):  # not a checkpoint write (those go to an open temporary file)
            return real(obj, f, *a, **k)
        calls["n"] += 1
        return real(obj, _FailingFile(f, limit, exc) if calls["n"] >= from_call else f, *a, **k)

    monkeypatch.setattr(torch, "save", save)


def test_disk_full_mid_save_reports_the_disk_not_torch(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.arange(5.0)}, path)
    before = path.read_bytes()
    _fail_saves(monkeypatch, OSError(28, "No space left on device"))
    with pytest.raises(OSError, match=r"^\[Errno 28\] No space left on device while writing checkpoint .*last\.ckpt; "
                                      r"the previous file there \(if any\) is kept unchanged") as e:
        atomic_torch_save({"step": 2, "w": torch.randn(100_000)}, path)
    assert e.value.errno == 28 and "enforce fail" not in str(e.value)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]


def test_sigint_mid_save_raises_keyboardinterrupt_not_torch_error(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)
    before = path.read_bytes()
    _fail_saves(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2, "w": torch.randn(100_000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]


@pytest.mark.parametrize("fault", ["disk full", "SIGINT"])
def test_fault_during_a_fit_checkpoint_save(tmp_path, tiny_root, monkeypatch, fault):
    """`qidbm fit` (checkpoints every 2 steps) whose 3rd save (step=4.ckpt) fails mid-write: a full
    disk ends the fit with the OSError naming the file; a SIGINT with Lightning's graceful shutdown
    (exit status 1). last.ckpt stays the complete step-2 checkpoint either way."""
    import signal

    from qidbm.cli import main
    from tests.reliability.conftest import write_fit_config

    cfg = write_fit_config(tmp_path / "c.yaml", tmp_path / "run", tiny_root)
    exc = OSError(28, "No space left on device") if fault == "disk full" else KeyboardInterrupt()
    _fail_saves(monkeypatch, exc, from_call=3)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        if fault == "disk full":
            with pytest.raises(OSError, match=r"No space left on device while writing checkpoint .*step=4\.ckpt"):
                main(["fit", "--config", str(cfg)])
        else:
            with pytest.raises(SystemExit) as e:
                main(["fit", "--config", str(cfg)])
            assert e.value.code == 1
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores further SIGINTs while it shuts down
    monkeypatch.undo()
    ck = tmp_path / "run" / "checkpoints"
    assert torch.load(ck / "last.ckpt", weights_only=True)["global_step"] == 2
    assert not (ck / "step=4.ckpt").exists() and not list(ck.glob(".*tmp"))
