"""DDP with 2 CPU processes (gloo), through `qidbm fit --trainer.strategy ddp --trainer.devices 2`.

* one rank failing (``tests.reliability.faults.RaiseOnRank`` raises on rank 1 at step 1) ends the
  whole job with a non-zero exit status and the error in its output, within a timeout (a hang
  fails the test instead of blocking CI);
* persistent chains are per rank and are restored per rank after a resume.

(Parameters staying identical across ranks for N steps: tests/lightning/test_module.py::
test_ddp_two_cpu_processes_keep_replicas_identical.)
"""

from __future__ import annotations

import time

import pytest
import torch

from tests.reliability.conftest import finish, qidbm_fit, write_fit_config

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


def test_one_rank_failing_ends_the_whole_job_with_the_error(tmp_path, tiny_root):
    cfg = write_fit_config(
        tmp_path / "ddp_fail.yaml", tmp_path / "out", tiny_root, devices=2, strategy="ddp", max_epochs=3,
        extra_callbacks="    - class_path: tests.reliability.faults.RaiseOnRank\n      init_args: {rank: 1, step: 1}")
    t0 = time.time()
    rc, out = finish(qidbm_fit(["--config", str(cfg)]), timeout=150)
    assert rc != 0, out[-3000:]
    assert "injected failure on rank 1 at step 1" in out, out[-3000:]
    # ended because of the failure, not because training finished (3 epochs = 9 steps)
    assert not (tmp_path / "out" / "checkpoints" / "step=8.ckpt").exists()
    assert time.time() - t0 < 150


@pytest.mark.slow  # two 2-process jobs: ~35 s on 2 cores
def test_chains_are_per_rank_and_restored_per_rank(tmp_path, tiny_root):
    out = tmp_path / "out"
    cfg = write_fit_config(tmp_path / "ddp.yaml", out, tiny_root, devices=2, strategy="ddp", max_epochs=1)
    rc, log = finish(qidbm_fit(["--config", str(cfg)]), timeout=150)
    assert rc == 0, log[-3000:]
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3  # 3 batches per rank and epoch: FinalCheckpoint saves the final step
    chains = last["qidbm"]["chains_per_rank"]
    gens = last["qidbm"]["generator_state_per_rank"]
    assert len(chains) == 2 and not torch.equal(chains[0][0], chains[1][0])  # per rank
    assert not torch.equal(gens[0], gens[1])
    # resume with one more epoch: each rank starts from its own chains and generator
    rc, log = finish(qidbm_fit(["--config", str(cfg), "--trainer.max_epochs", "2", "--ckpt_path", "last"]),
                     timeout=150)
    assert rc == 0, log[-3000:]
    for r in (0, 1):
        start = torch.load(out / "state" / f"start_rank{r}.pt", weights_only=True)
        assert start["global_step"] == 3
        for saved, restored in zip(chains[r], start["chains"]):
            assert torch.equal(saved, restored), f"rank {r}"
        assert torch.equal(gens[r], start["generator"]), f"rank {r}"
    end0 = torch.load(out / "state" / "end_rank0.pt", weights_only=True)
    end1 = torch.load(out / "state" / "end_rank1.pt", weights_only=True)
    assert end0["global_step"] == end1["global_step"] == 6
    for n, p in end0["params"].items():
        assert torch.equal(p, end1["params"][n]), n  # replicas identical after the resume too
