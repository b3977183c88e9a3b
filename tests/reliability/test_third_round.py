"""Faults a hostile user tried on `qidbm fit|sample|evaluate`, one test per fault (docs/reliability.md).

Faults injected: a checkpoint whose pickle runs code (every entry point), Ctrl-C during a fit (once,
twice), a fit into a folder that holds another run, NaN parameters (at load, at save), a file size
limit reached while `qidbm sample` and `qidbm evaluate --json` write (``RLIMIT_FSIZE`` in a
subprocess: writes fail as on a full disk), a damaged file in a folder evaluation, a writer killed
with SIGKILL mid-write, an output name whose companion file belongs to someone else, seeds out of
range, and user errors that must end in one line. ``qidbm.cli.run`` is the command line (one-line
errors); ``qidbm.cli.main(argv)`` raises, for Python callers.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import qidbm
from qidbm.api import SettingError
from qidbm.cli import main, run
from tests.reliability.conftest import REPO, finish, qidbm_fit, write_fit_config

DBM = REPO / "checkpoints" / "dbm_mnist_binary.ckpt"


def _tiny_checkpoint(path: Path, *, step: int = 3, nan: bool = False, payload=None) -> Path:
    """A `qidbm fit`-style checkpoint of a 784-16-8 DBM (the shipped DBM's data info and protocol)."""
    from qidbm.models import DBM as DBMModel

    base = torch.load(DBM, map_location="cpu", weights_only=True)
    torch.manual_seed(step)
    m = DBMModel([784, 16, 8])
    state = {"model." + k: v.clone() for k, v in m.state_dict().items()}
    if nan:
        state["model.weights.0"][3, 2] = float("nan")
    qs = dict(base["qidbm"], model_class="DBM", model_config=m.config(), chains_per_rank=[None],
              generator_state_per_rank=[None])
    hp = dict(base["hyper_parameters"])
    if payload is not None:
        hp["notes"] = payload
    torch.save({**base, "state_dict": state, "qidbm": qs, "hyper_parameters": hp, "global_step": step}, path)
    return path


class _Payload:
    """Unpickling this creates the folder ``marker``: proof that the file's code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _err_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------- 1. code in a checkpoint
def test_checkpoint_holding_code_is_refused_by_every_entry_point(tmp_path, tiny_root, capsys):
    """A crafted checkpoint (valid qidbm content plus a pickled call) given to the file, folder, resume
    and Python entry points, and as FID and classifier weights: nothing runs, and the message says the
    file holds code and was refused."""
    from qidbm.api import checkpoint_files
    from qidbm.checkpoint import CheckpointError, load_checkpoint
    from qidbm.lightning.checkpoint_io import AtomicCheckpointIO
    from qidbm.metrics.classifier import load_classifier
    from qidbm.metrics.fid import compute_fid
    from qidbm.metrics.inception import FIDWeightsError, build_fid_inception

    marker = tmp_path / "code-ran"
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    evil = _tiny_checkpoint(folder / "step=2.ckpt", step=2, payload=_Payload(str(marker)))
    _tiny_checkpoint(folder / "last.ckpt", step=4)
    alone = tmp_path / "evil.ckpt"
    alone.write_bytes(evil.read_bytes())

    # command line: a file (sample, evaluate), a folder (evaluate), a resume (fit, validate)
    assert run(["sample", "--ckpt", str(alone), "--num-samples", "2", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "holds code" in err and "refused" in err and "evil.ckpt" in err and "Traceback" not in err, err
    assert run(["evaluate", "--ckpt", str(alone), "--no-fid", "--ais-runs", "0"]) == 2
    assert "holds code" in capsys.readouterr().err
    assert run(["evaluate", "--ckpt", str(folder.parent), "--no-fid", "--ais-runs", "0"]) == 0
    out = capsys.readouterr()
    assert "step=2.ckpt" in out.out + out.err and "holds code" in out.out + out.err
    cfg = write_fit_config(tmp_path / "c.yaml", tmp_path / "fit", tiny_root)
    for sub in ("fit", "validate"):
        with pytest.raises(CheckpointError, match="holds code"):
            main([sub, "--config", str(cfg), "--ckpt_path", str(alone)])
    with pytest.raises(CheckpointError, match="holds code"):
        AtomicCheckpointIO().load_checkpoint(alone)
    # Python API
    for call in (lambda: qidbm.load(alone), lambda: qidbm.sample(alone, 2), lambda: load_checkpoint(alone),
                 lambda: checkpoint_files(folder)):
        with pytest.raises(CheckpointError, match="holds code"):
            call()
    problems: list = []
    assert [p.name for p in checkpoint_files(folder, problems=problems)] == ["last.ckpt"]
    assert problems and problems[0][0].name == "step=2.ckpt"
    assert qidbm.evaluate(folder.parent, fid=False, ais_runs=0, estimate=False)["global_step"] == 4
    # the same file as FID weights (both backends) and as classifier weights
    with pytest.raises(FIDWeightsError, match="holds code"):
        build_fid_inception(alone)
    with pytest.raises(FIDWeightsError, match="holds code"):
        compute_fid(torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28), backend="torchmetrics", weights_path=alone)
    with pytest.raises(CheckpointError, match="holds code"):
        load_classifier("MNIST", path=alone)
    assert not marker.exists(), "the checkpoint's code ran"


# ---------------------------------------------------------------- 2. Ctrl-C during a fit
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


def _paused_fit(tmp_path, tiny_root, step):
    out, flag = tmp_path / "run", str(tmp_path / "go")
    cfg = write_fit_config(
        tmp_path / "c.yaml", out, tiny_root, max_epochs=-1,
        extra_callbacks=f"    - class_path: tests.reliability.faults.PauseAt\n      init_args: {{step: {step}, flag: {flag}}}")
    proc = qidbm_fit(["--config", str(cfg), "--trainer.max_steps", "100000"])
    _wait_for(flag + ".paused", proc)
    return proc, out / "checkpoints", flag


def test_ctrl_c_saves_last_ckpt_and_exits_non_zero(tmp_path, tiny_root):
    """Ctrl-C (SIGINT) mid-epoch, between two periodic checkpoints: as SIGTERM, the fit stops after the
    batch, writes last.ckpt at that step, says so and exits with status 130."""
    proc, ck, flag = _paused_fit(tmp_path, tiny_root, 6)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    open(flag, "w").close()
    rc, log = finish(proc)
    assert rc == 130, log[-3000:]
    assert "received SIGINT (Ctrl-C) at global step 7" in log and "resume with --ckpt_path last" in log, log[-3000:]
    assert torch.load(ck / "last.ckpt", weights_only=True)["global_step"] == 7
    assert not list(ck.glob(".*.tmp"))


def test_second_ctrl_c_aborts_without_saving(tmp_path, tiny_root):
    proc, ck, flag = _paused_fit(tmp_path, tiny_root, 6)
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)  # while still paused: the first stop has not been reached
        rc, log = finish(proc, timeout=60)
    finally:
        open(flag, "w").close()
    assert rc == 130, log[-3000:]
    assert "second Ctrl-C" in log and "aborted" in log, log[-3000:]
    assert torch.load(ck / "last.ckpt", weights_only=True)["global_step"] == 6  # the last periodic save
    assert not list(ck.glob(".*.tmp"))


def test_ctrl_c_in_process_stops_like_sigterm(tmp_path, tiny_root):
    cfg = write_fit_config(
        tmp_path / "k.yaml", tmp_path / "run", tiny_root, max_epochs=1,
        extra_callbacks="    - class_path: tests.reliability.faults.SignalAt\n      init_args: {step: 2, signum: SIGINT}")
    handler = signal.getsignal(signal.SIGINT)
    assert main(["fit", "--config", str(cfg)]) == 130
    assert signal.getsignal(signal.SIGINT) is handler  # put back after the fit
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


# ---------------------------------------------------------------- 3. a fit into a used folder
QUICKSTART_LIKE = """
seed_everything: 0
trainer:
  accelerator: cpu
  max_epochs: 1
  limit_train_batches: {steps}
  logger: false
  enable_model_summary: false
  enable_progress_bar: false
  default_root_dir: {out}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {out}/checkpoints, save_last: true, save_top_k: 0}}
model:
  class_path: qidbm.lightning.BoltzmannModule
  init_args:
    model:
      class_path: qidbm.models.DBM
      init_args: {{layer_sizes: [784, 8, 4]}}
    optimizer: {{class_path: torch.optim.SGD, init_args: {{lr: 0.01}}}}
data:
  class_path: qidbm.data.MNISTDataModule
  init_args: {{root: {root}, encoding: binary, batch_size: 40, download: false}}
"""


def test_fit_into_a_folder_holding_another_run_is_refused(tmp_path, tiny_root, capsys):
    """save_top_k: 0 as in configs/quickstart.yaml: a second run into the folder would have written
    last-v1.ckpt and left last.ckpt to the first run, which `qidbm sample` would then use silently."""
    out = tmp_path / "run"
    ck = out / "checkpoints"
    long_run, short_run = tmp_path / "long.yaml", tmp_path / "short.yaml"
    long_run.write_text(QUICKSTART_LIKE.format(out=out, root=tiny_root, steps=4))
    short_run.write_text(QUICKSTART_LIKE.format(out=out, root=tiny_root, steps=2))
    assert main(["fit", "--config", str(long_run)]) == 0
    first = (ck / "last.ckpt").read_bytes()
    capsys.readouterr()
    assert run(["fit", "--config", str(short_run)]) == 2
    err = capsys.readouterr().err
    assert "holds the checkpoints of another run" in err and "--ckpt_path last" in err and "--overwrite" in err, err
    assert str(ck) in err and "Traceback" not in err
    assert (ck / "last.ckpt").read_bytes() == first and sorted(p.name for p in ck.iterdir()) == ["last.ckpt"]
    # the fixes: an explicit overwrite (last.ckpt is then the new run) ...
    assert main(["fit", "--config", str(short_run), "--overwrite"]) == 0
    assert sorted(p.name for p in ck.glob("*.ckpt")) == ["last.ckpt"]
    assert torch.load(ck / "last.ckpt", weights_only=True)["global_step"] == 2
    # ... or a resume of the run in the folder
    assert main(["fit", "--config", str(long_run), "--trainer.max_epochs", "2", "--ckpt_path", "last"]) == 0
    assert torch.load(ck / "last.ckpt", weights_only=True)["global_step"] == 6


# ---------------------------------------------------------------- 4. NaN parameters
def test_non_finite_checkpoint_is_refused_by_sample_evaluate_and_resume(tmp_path, tiny_root, capsys):
    bad = _tiny_checkpoint(tmp_path / "nan.ckpt", nan=True)
    out = tmp_path / "s"
    assert run(["sample", "--ckpt", str(bad), "--num-samples", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "NaN/Inf" in err and "model.weights.0" in err and "earlier checkpoint" in err, err
    assert not out.exists()
    assert run(["evaluate", "--ckpt", str(bad), "--no-fid", "--ais-runs", "2", "--ais-betas", "3"]) == 2
    assert "NaN/Inf" in capsys.readouterr().err
    with pytest.raises(ValueError, match="NaN/Inf"):
        qidbm.load(bad)
    # resume: a checkpoint written by `qidbm fit`, with a NaN put in afterwards
    cfg = write_fit_config(tmp_path / "c.yaml", tmp_path / "run", tiny_root, max_epochs=1)
    assert main(["fit", "--config", str(cfg), "--trainer.max_steps", "2"]) == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["state_dict"]["model.biases.1"][0] = float("inf")
    torch.save(ckpt, last.parent / "inf.ckpt")
    with pytest.raises(ValueError, match=r"NaN/Inf.*model\.biases\.1"):
        main(["fit", "--config", str(cfg), "--ckpt_path", str(last.parent / "inf.ckpt")])


def test_non_finite_state_is_never_saved(tmp_path):
    from qidbm.checkpoint import atomic_torch_save, export_checkpoint
    from qidbm.lightning.checkpoint_io import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    good = {"state_dict": {"model.w": torch.ones(3)}, "global_step": 1}
    AtomicCheckpointIO().save_checkpoint(good, path)
    before = path.read_bytes()
    bad = {"state_dict": {"model.w": torch.tensor([1.0, float("nan"), 2.0])}, "global_step": 2}
    with pytest.raises(FloatingPointError, match=r"NaN/Inf.*model\.w: 1 of 3 values.*kept"):
        AtomicCheckpointIO().save_checkpoint(bad, path)
    with pytest.raises(FloatingPointError):
        atomic_torch_save(bad, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]
    with pytest.raises(ValueError, match="NaN/Inf"):
        export_checkpoint(_tiny_checkpoint(tmp_path / "nan.ckpt", nan=True), tmp_path / "slim.ckpt")
    assert not (tmp_path / "slim.ckpt").exists()


# ---------------------------------------------------------------- 5, 6. writes that fail (file size limit)
def _limited(argv: list[str], limit: int) -> subprocess.CompletedProcess:
    """`python -m qidbm.cli ARGV` with files limited to ``limit`` bytes: a longer write fails with
    EFBIG ('File too large'), as a write to a full disk fails with ENOSPC."""
    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore",
               PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "qidbm.cli", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, preexec_fn=limit_files)


def test_failed_sample_write_names_the_file_and_keeps_the_previous_set(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "m.ckpt")
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(ckpt), "--num-samples", "2", "--seed", "1", "--out", str(out)]) == 0
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(old) == ["samples.npy", "samples.png"]
    # 8 samples: the PNG grid (< 3 kB) fits under the limit, the array (25 kB) does not
    r = _limited(["sample", "--ckpt", str(ckpt), "--num-samples", "8", "--seed", "2", "--out", str(out)], 6000)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "samples.npy" in r.stderr and "File too large" in r.stderr and "kept" in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and len(_err_lines(r.stderr)) == 1, r.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old  # the previous set, and nothing else


def test_evaluate_prints_its_results_before_an_atomic_json_write(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "m.ckpt")
    results = tmp_path / "results.json"
    results.write_text('{"previous": "results"}\n')
    r = _limited(["evaluate", "--ckpt", str(ckpt), "--no-fid", "--ais-runs", "0", "--json", str(results)], 100)
    assert r.returncode == 1, r.stderr[-3000:]
    assert str(results) in r.stderr and "File too large" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert results.read_text() == '{"previous": "results"}\n'  # not truncated
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    printed, _ = json.JSONDecoder().raw_decode(r.stdout[r.stdout.index("\n{\n") + 1:])
    assert printed["global_step"] == 3 and printed["model"] == "DBM"  # nothing was lost


# ---------------------------------------------------------------- 7. a damaged checkpoint in a folder
def test_folder_evaluation_names_a_damaged_checkpoint_and_goes_on(tmp_path, capsys):
    from qidbm.api import checkpoint_files
    from qidbm.checkpoint import CheckpointError

    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    _tiny_checkpoint(folder / "step=1.ckpt", step=1)
    cut = _tiny_checkpoint(folder / "step=2.ckpt", step=2)
    cut.write_bytes(cut.read_bytes()[:3000])
    _tiny_checkpoint(folder / "last.ckpt", step=3)
    js = tmp_path / "r.json"
    assert run(["evaluate", "--ckpt", str(tmp_path / "run"), "--no-fid", "--ais-runs", "0", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "step=2.ckpt" in out and "truncated or damaged" in out and "skipped" in out, out
    res = json.loads(js.read_text())
    assert res["global_step"] == 3 and [Path(s["checkpoint"]).name for s in res["skipped_checkpoints"]] == ["step=2.ckpt"]
    assert [p.name for p in checkpoint_files(folder, problems=[])] == ["step=1.ckpt", "last.ckpt"]
    with pytest.raises(CheckpointError, match=r"step=2\.ckpt.*truncated"):
        checkpoint_files(folder)  # strict: the damaged file named
    for f in ("step=1.ckpt", "last.ckpt"):
        (folder / f).write_bytes(b"not a checkpoint")
    assert run(["evaluate", "--ckpt", str(folder), "--no-fid", "--ais-runs", "0"]) == 2
    err = capsys.readouterr().err
    assert "no readable checkpoint" in err and "step=2.ckpt" in err and "last.ckpt" in err, err


# ---------------------------------------------------------------- 8. temporary files of killed writers
WRITER = textwrap.dedent("""
    import sys, time
    from qidbm.atomic import atomic_write
    def writer(f):
        f.write(b"x" * 100_000)
        f.flush()
        print("writing", flush=True)
        time.sleep(120)
    atomic_write(sys.argv[1], writer)
""")


def test_temporary_files_of_a_killed_writer_are_removed_at_the_next_write(tmp_path):
    from qidbm.checkpoint import atomic_torch_save

    path = tmp_path / "last.ckpt"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO))) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "writing"
        procs[0].send_signal(signal.SIGKILL)  # killed mid-write; procs[1] is still writing
        procs[0].wait(timeout=30)
        temps = sorted(tmp_path.glob(".last.ckpt.*.tmp"))
        assert len(temps) == 2
        past = time.time() - 60
        for t in temps:
            os.utime(t, (past, past))  # both old: only the lock tells the live writer's file from the stale one
        atomic_torch_save({"step": 1}, path)
        left = sorted(tmp_path.glob(".last.ckpt.*.tmp"))
        assert len(left) == 1, left  # the killed writer's file is gone, the live writer's is kept
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)
    atomic_torch_save({"step": 2}, path)  # now that writer is dead too
    assert os.listdir(tmp_path) == ["last.ckpt"] and torch.load(path, weights_only=True)["step"] == 2


# ---------------------------------------------------------------- 9. files the user did not name
def test_sample_never_replaces_a_file_it_was_not_given(tmp_path, capsys):
    ckpt = _tiny_checkpoint(tmp_path / "m.ckpt")
    mine = tmp_path / "data.npy"
    np.save(mine, np.arange(10))
    before = mine.read_bytes()
    assert run(["sample", "--ckpt", str(ckpt), "--num-samples", "2", "--out", str(tmp_path / "data.png")]) == 2
    err = capsys.readouterr().err
    assert "data.npy" in err and "already exists" in err and "Traceback" not in err, err
    assert mine.read_bytes() == before and not (tmp_path / "data.png").exists()
    # a grid and array written together by `qidbm sample` are one output: a rerun replaces both
    grid = tmp_path / "grid.png"
    assert run(["sample", "--ckpt", str(ckpt), "--num-samples", "2", "--seed", "1", "--out", str(grid)]) == 0
    first = grid.with_suffix(".npy").read_bytes()
    assert run(["sample", "--ckpt", str(ckpt), "--num-samples", "2", "--seed", "2", "--out", str(grid)]) == 0
    assert grid.with_suffix(".npy").read_bytes() != first


# ---------------------------------------------------------------- 10. seeds
@pytest.mark.parametrize("seed", ["99999999999999999999999", "-1"])
def test_seed_out_of_range_is_a_one_line_error(tmp_path, capsys, seed):
    ckpt = _tiny_checkpoint(tmp_path / "m.ckpt")
    for cmd in (["sample", "--out", str(tmp_path / "s")], ["evaluate", "--no-fid", "--ais-runs", "0"]):
        assert run([cmd[0], "--ckpt", str(ckpt), "--seed", seed, *cmd[1:]]) == 2
        err = capsys.readouterr().err
        assert "--seed must be an integer from 0 to 18446744073709551615" in err and "Traceback" not in err, err
    with pytest.raises(SettingError, match="seed must be"):
        qidbm.sample(ckpt, 2, seed=int(seed))


# ---------------------------------------------------------------- one-line errors
def test_user_errors_are_one_line_with_exit_status_2(tmp_path, tiny_root, capsys, monkeypatch):
    cut = _tiny_checkpoint(tmp_path / "cut.ckpt")
    cut.write_bytes(cut.read_bytes()[:2000])
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(os.urandom(3000))
    good = _tiny_checkpoint(tmp_path / "m.ckpt")
    cases = {
        "missing": ["sample", "--ckpt", str(tmp_path / "nope.ckpt")],
        "a folder": ["sample", "--ckpt", str(tmp_path)],
        "truncated": ["evaluate", "--ckpt", str(cut), "--no-fid", "--ais-runs", "0"],
        "random bytes": ["sample", "--ckpt", str(noise)],
        "batch size 0": ["sample", "--ckpt", str(good), "--batch-size", "0", "--out", str(tmp_path / "s")],
    }
    for name, argv in cases.items():
        assert run(argv) == 2, name
        err = capsys.readouterr().err
        lines = _err_lines(err)
        assert len(lines) == 1 and lines[0].startswith(f"qidbm {argv[0]}: error: "), (name, err)
        assert "QIDBM_DEBUG=1" in lines[0], (name, err)
    cfg = write_fit_config(tmp_path / "c.yaml", tmp_path / "fit", tiny_root)
    assert run(["fit", "--config", str(cfg), "--data.init_args.batch_size", "0"]) == 2
    assert _err_lines(capsys.readouterr().err)[-1].startswith("qidbm fit: error: ")
    # the traceback on request: --debug, or QIDBM_DEBUG=1 (the error is raised as in Python)
    with pytest.raises(FileNotFoundError):
        run(["sample", "--debug", "--ckpt", str(tmp_path / "nope.ckpt")])
    monkeypatch.setenv("QIDBM_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        run(["sample", "--ckpt", str(tmp_path / "nope.ckpt")])
