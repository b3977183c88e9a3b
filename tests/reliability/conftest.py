"""Shared pieces of the reliability tests: tiny on-disk MNIST and a `qidbm fit` subprocess runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TINY_FIT = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: {devices}
  strategy: {strategy}
  max_epochs: {max_epochs}
  logger: false
  enable_model_summary: false
  enable_progress_bar: false
  num_sanity_val_steps: 0
  default_root_dir: {out}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {out}/checkpoints, save_last: true, save_top_k: -1, every_n_train_steps: {every}, filename: "{{step}}"}}
    - class_path: tests.reliability.faults.DumpState
      init_args: {{out: {out}/state}}
{extra_callbacks}
model:
  class_path: qidbm.lightning.BoltzmannModule
  init_args:
    model:
      class_path: qidbm.models.QiDBM
      init_args: {{layer_sizes: [784, 16, 8], quantum_layers: [1]}}
    kernel: qidbm.samplers.ExactStep
    optimizer:
      class_path: torch.optim.SGD
      init_args: {{lr: 0.05, momentum: 0.5}}
data:
  class_path: qidbm.data.MNISTDataModule
  init_args: {{root: {root}, encoding: binary, batch_size: {batch_size}, download: false, cache_dir: {root}/cache}}
"""


def write_fit_config(path: Path, out: Path, root: Path, *, every=2, max_epochs=2, batch_size=40, devices=1,
                     strategy="auto", extra_callbacks: str = "") -> Path:
    path.write_text(TINY_FIT.format(out=out, root=root, every=every, max_epochs=max_epochs, batch_size=batch_size,
                                    devices=devices, strategy=strategy, extra_callbacks=extra_callbacks))
    return path


def qidbm_fit(args: list[str], timeout: float = 120, **popen) -> subprocess.Popen:
    """Start `python -m qidbm.cli fit ARGS` from the repo root, one thread, no network."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MKL_CBWR="COMPATIBLE", PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    # own session: on a hang the whole process group (DDP workers included) can be killed
    return subprocess.Popen([sys.executable, "-m", "qidbm.cli", "fit", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            **popen)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    """Wait for a subprocess; a hang past ``timeout`` kills it and fails the test (never blocks CI)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        pytest.fail(f"subprocess hung for more than {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from tests.test_cli import make_tiny_mnist

    return make_tiny_mnist(tmp_path_factory.mktemp("tinydata") / "data")
