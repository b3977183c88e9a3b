"""A `qidbm fit` killed with SIGKILL mid-epoch resumes with `--ckpt_path last` exactly.

Fault injected: ``tests.reliability.faults.KillAt`` sends SIGKILL to the fit process itself when
the batch of global step 9 (the 4th of 6 batches of epoch 1) starts -- no clean shutdown, no final
checkpoint. Checkpoints are written every 2 optimizer steps, so ``last.ckpt`` holds step 8, saved
after 2 batches of epoch 1. Oracle: an uninterrupted run with the same seed; on CPU the resumed
run's parameters, chains, optimizer state, generator state and loop position equal it bit for bit
at the next checkpoint (step 10) and at the end (step 12). This needs ``MidEpochResume`` (installed
by ``qidbm fit``): without it Lightning restarts the epoch's data from its first batch.
"""

from __future__ import annotations

import signal

import torch

from tests.reliability.conftest import finish, qidbm_fit, write_fit_config


def _load(p):
    return torch.load(p, map_location="cpu", weights_only=True)


def _assert_same_checkpoint(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys() and len(sa) > 0
    for k in sa:
        assert torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]), f"optimizer state {k}"
    qa, qb = a["qidbm"], b["qidbm"]
    for ca, cb in zip(qa["chains_per_rank"][0], qb["chains_per_rank"][0]):
        assert (ca is None and cb is None) or torch.equal(ca, cb)
    assert torch.equal(qa["generator_state_per_rank"][0], qb["generator_state_per_rank"][0])
    # Lightning's loop state: the batch index inside the epoch (mid-epoch resume)
    pa = a["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    pb = b["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert pa == pb


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path, tiny_root):
    straight_out, killed_out = tmp_path / "straight", tmp_path / "killed"
    straight_cfg = write_fit_config(tmp_path / "straight.yaml", straight_out, tiny_root)
    killed_cfg = write_fit_config(
        tmp_path / "killed.yaml", killed_out, tiny_root,
        extra_callbacks="    - class_path: tests.reliability.faults.KillAt\n      init_args: {step: 9}")
    # the two first runs are independent: run them side by side (2 cores)
    p_straight = qidbm_fit(["--config", str(straight_cfg)])
    p_killed = qidbm_fit(["--config", str(killed_cfg)])
    rc_killed, out_killed = finish(p_killed)
    rc_straight, out_straight = finish(p_straight)
    assert rc_straight == 0, out_straight[-3000:]
    assert rc_killed == -signal.SIGKILL, out_killed[-3000:]
    ck = killed_out / "checkpoints"
    assert sorted(p.name for p in ck.glob("*.ckpt")) == ["last.ckpt", "step=2.ckpt", "step=4.ckpt", "step=6.ckpt",
                                                          "step=8.ckpt"]
    assert not list(ck.glob(".*tmp")), "a temporary checkpoint file was left behind"
    last = _load(ck / "last.ckpt")
    # the kill came at step 9: batch 3 of epoch 1 (6 batches per epoch); last.ckpt is step 8, mid-epoch
    assert last["global_step"] == 8 and last["epoch"] == 1
    assert last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"] == 2

    # resume: the same run's config without the kill, --ckpt_path last
    resume_cfg = write_fit_config(tmp_path / "resume.yaml", killed_out, tiny_root)
    rc, out = finish(qidbm_fit(["--config", str(resume_cfg), "--ckpt_path", "last"]))
    assert rc == 0, out[-3000:]
    del out
    # ... it restarts where the checkpoint was: step 8, the chains, the generator, the optimizer
    start = _load(killed_out / "state" / "start_rank0.pt")
    assert start["global_step"] == 8
    for c_saved, c_now in zip(last["qidbm"]["chains_per_rank"][0], start["chains"]):
        assert torch.equal(c_saved, c_now)
    assert torch.equal(last["qidbm"]["generator_state_per_rank"][0], start["generator"])
    # ... and equals the uninterrupted run at the next checkpoint and at the end
    s_ck = straight_out / "checkpoints"
    _assert_same_checkpoint(_load(s_ck / "step=10.ckpt"), _load(ck / "step=10.ckpt"))
    _assert_same_checkpoint(_load(s_ck / "step=12.ckpt"), _load(ck / "step=12.ckpt"))
    end_s, end_r = _load(straight_out / "state" / "end_rank0.pt"), _load(killed_out / "state" / "end_rank0.pt")
    assert end_s["global_step"] == end_r["global_step"] == 12
    for n, p in end_s["params"].items():
        assert torch.equal(p, end_r["params"][n]), n
