"""A fit that is stopped -- by SIGTERM, by its own limits, or because another fit holds its folder.

Faults injected:
* SIGTERM, what schedulers and ``timeout`` send before SIGKILL: from outside the process while the
  fit is paused mid-epoch at a known step (``tests.reliability.faults.PauseAt``), and from inside
  (``faults.SignalAt``). Lightning's own handler stops the loop at the end of the batch;
  ``FinalCheckpoint`` writes ``last.ckpt`` at that step and ``qidbm fit`` exits with status 143.
* ``max_steps`` that is not a multiple of the checkpoint interval: ``last.ckpt`` is the final step.
* a second ``qidbm fit`` into the folders of a running one: ``RunLock`` refuses it before it writes.
"""

from __future__ import annotations

import csv
import os
import time

import pytest
import torch

from qidbm.cli import main
from qidbm.lightning.run_lock import RunFolderInUseError, RunLock
from tests.reliability.conftest import finish, qidbm_fit, write_fit_config


def _load(p):
    return torch.load(p, map_location="cpu", weights_only=True)


def _wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None:
            out, _ = proc.communicate()
            pytest.fail(f"the fit ended before reaching the pause:\n{out[-3000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            pytest.fail(f"no {path} after {timeout} s")
        time.sleep(0.05)


def test_sigterm_writes_a_checkpoint_at_the_current_step_and_exits_non_zero(tmp_path, tiny_root):
    """As `timeout -s TERM 10 qidbm fit ...` does: the signal comes from outside, mid-epoch, between
    two periodic checkpoints (every 2 steps; the fit is paused at the batch of global step 6)."""
    out, flag = tmp_path / "run", str(tmp_path / "go")
    cfg = write_fit_config(
        tmp_path / "c.yaml", out, tiny_root, max_epochs=-1,
        extra_callbacks=f"    - class_path: tests.reliability.faults.PauseAt\n      init_args: {{step: 6, flag: {flag}}}")
    proc = qidbm_fit(["--config", str(cfg), "--trainer.max_steps", "100000"])
    _wait_for(flag + ".paused", proc)
    proc.terminate()  # SIGTERM
    open(flag, "w").close()
    rc, log = finish(proc)
    assert rc == 143, log[-3000:]  # not 0: a scheduler must not read this as a finished job
    assert "received SIGTERM at global step 7" in log and "resume with --ckpt_path last" in log, log[-3000:]
    ck = out / "checkpoints"
    last = _load(ck / "last.ckpt")
    assert last["global_step"] == 7  # the step it stopped at, not the last periodic save (6)
    assert sorted(p.name for p in ck.glob("*.ckpt")) == ["last.ckpt", "step=2.ckpt", "step=4.ckpt", "step=6.ckpt"]


def test_sigterm_checkpoint_resumes_to_the_uninterrupted_run(tmp_path, tiny_root):
    """In-process: SIGTERM at the batch of step 2, so the stop comes after step 3 (mid-epoch, between two
    periodic checkpoints); the run resumed from that last.ckpt ends bit for bit where an uninterrupted
    run ends (CPU, fixed seed; one epoch of 6 steps)."""
    straight = write_fit_config(tmp_path / "s.yaml", tmp_path / "straight", tiny_root, max_epochs=1)
    stopped = write_fit_config(
        tmp_path / "k.yaml", tmp_path / "stopped", tiny_root, max_epochs=1,
        extra_callbacks="    - class_path: tests.reliability.faults.SignalAt\n      init_args: {step: 2, signum: SIGTERM}")
    resume = write_fit_config(tmp_path / "r.yaml", tmp_path / "stopped", tiny_root, max_epochs=1)
    assert main(["fit", "--config", str(straight)]) == 0
    assert main(["fit", "--config", str(stopped)]) == 143
    last = _load(tmp_path / "stopped" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 3 and last["epoch"] == 0
    assert main(["fit", "--config", str(resume), "--ckpt_path", "last"]) == 0
    a = _load(tmp_path / "straight" / "state" / "end_rank0.pt")
    b = _load(tmp_path / "stopped" / "state" / "end_rank0.pt")
    assert _load(tmp_path / "stopped" / "state" / "start_rank0.pt")["global_step"] == 3
    assert a["global_step"] == b["global_step"] == 6
    for n, p in a["params"].items():
        assert torch.equal(p, b["params"][n]), n
    assert torch.equal(a["generator"], b["generator"])


def test_last_checkpoint_is_written_at_the_final_step(tmp_path, tiny_root):
    """max_steps 5 with a checkpoint every 2 steps: last.ckpt is step 5, not step 4."""
    cfg = write_fit_config(tmp_path / "c.yaml", tmp_path / "run", tiny_root)
    assert main(["fit", "--config", str(cfg), "--trainer.max_steps", "5"]) == 0
    ck = tmp_path / "run" / "checkpoints"
    assert _load(ck / "last.ckpt")["global_step"] == 5
    assert sorted(p.name for p in ck.glob("*.ckpt")) == ["last.ckpt", "step=2.ckpt", "step=4.ckpt"]
    end = _load(tmp_path / "run" / "state" / "end_rank0.pt")
    for n, p in end["params"].items():
        assert torch.equal(p, _load(ck / "last.ckpt")["state_dict"][n]), n


CSV_LOGGER = """  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {out}, name: logs, version: 0}}
"""


def test_second_fit_into_the_same_run_folder_is_refused(tmp_path, tiny_root):
    out, flag = tmp_path / "run", str(tmp_path / "go")
    cfg_a = write_fit_config(
        tmp_path / "a.yaml", out, tiny_root, max_epochs=1,
        extra_callbacks=f"    - class_path: tests.reliability.faults.PauseAt\n      init_args: {{step: 2, flag: {flag}}}")
    cfg_a.write_text(cfg_a.read_text().replace("  logger: false\n", CSV_LOGGER.format(out=out)))
    cfg_b = write_fit_config(tmp_path / "b.yaml", out, tiny_root, max_epochs=2)
    cfg_b.write_text(cfg_b.read_text().replace("  logger: false\n", CSV_LOGGER.format(out=out)))
    proc = qidbm_fit(["--config", str(cfg_a), "--trainer.log_every_n_steps", "1"])
    _wait_for(flag + ".paused", proc)  # run A is mid-epoch, holding the run folder
    try:
        with pytest.raises(RunFolderInUseError, match=rf"(?s)another `qidbm fit` is writing to .*run.*pid {proc.pid}.*own folder"):
            main(["fit", "--config", str(cfg_b)])
    finally:
        open(flag, "w").close()
    rc, log = finish(proc)
    assert rc == 0, log[-3000:]
    # everything in the folder is run A's: its config, its 6 steps (1 epoch), its metrics only
    log_dir = out / "logs" / "version_0"
    assert "PauseAt" in (log_dir / "config.yaml").read_text()
    assert _load(out / "checkpoints" / "last.ckpt")["global_step"] == 6
    with open(log_dir / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(6))  # one row per step of run A (no rows of run B)
    # the lock went with the run: the folders are free again
    lock = RunLock()
    assert lock.acquire([str(out / "checkpoints"), str(log_dir)]) is None
    lock.release()
