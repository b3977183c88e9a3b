"""NaN/Inf in the loss, a parameter or the persistent chains: found at the step where it appears.

Each test injects the fault at a known global step and checks what FaultGuard does: raise a
NumericalFaultError naming the tensor and that step (default), or restore the last good state
(parameters, optimizer state, chains, generator) and go on (``on_fault="restore"``); a NaN state is
never written to a checkpoint, and FIDCallback never keeps a non-finite FID as "best".
"""

from __future__ import annotations

import functools
import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qidbm.lightning import BoltzmannModule
from qidbm.lightning.fault_guard import FaultGuard, NumericalFaultError
from qidbm.models import QiDBM


def _data(n=64, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset((torch.rand(n, d, generator=g) < 0.3).float()), batch_size=8, shuffle=False)


def _module(**kw):
    torch.manual_seed(0)
    return BoltzmannModule(QiDBM([16, 6, 4], [1]), optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.5),
                           chain_seed=0, **kw)


def _trainer(tmp_path, callbacks, max_steps=8, **kw):
    opts = dict(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    opts.update(kw)
    return L.Trainer(callbacks=callbacks, **opts)


class NaNLossAt(L.Callback):
    """Make the loss of the batches at the given global steps NaN (wraps the module's loss)."""

    def __init__(self, steps):
        self.steps = set(steps)

    def on_fit_start(self, trainer, pl_module):
        orig = pl_module.loss

        def loss_fn(v):
            loss, terms = orig(v)
            if trainer.global_step in self.steps:
                loss = loss * float("nan")
            return loss, terms

        pl_module.loss = loss_fn


class NaNGradAt(L.Callback):
    """A NaN in one gradient entry before the optimizer step: the loss is finite, the parameter is not."""

    def __init__(self, step, name="model.weights.0"):
        self.step, self.name = step, name

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.step:
            dict(pl_module.named_parameters())[self.name].grad.view(-1)[3] = float("nan")


class InfChainsAt(L.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step + 1:  # global_step already counts this batch's step
            pl_module.chains[1][0, 0] = float("inf")


class Record(L.Callback):
    """Copy parameters, optimizer state, chains and generator state at the start of each batch."""

    def __init__(self):
        self.at = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.at.setdefault(trainer.global_step, []).append({
            "params": [p.detach().clone() for p in pl_module.parameters()],
            "momentum": [s["momentum_buffer"].clone() for s in trainer.optimizers[0].state.values()],
            "chains": None if pl_module.chains is None else [c.clone() for c in pl_module.chains],
            "gen": pl_module.generator.get_state(),
        })


@pytest.mark.parametrize("inject,tensor,step", [
    (lambda: NaNLossAt([3]), "loss", 3),
    (lambda: NaNGradAt(2), "parameter 'model.weights.0'", 2),
    (lambda: InfChainsAt(4), "persistent chains (layer 1)", 4),
])
def test_fault_raises_naming_tensor_and_step(tmp_path, inject, tensor, step):
    t = _trainer(tmp_path, [inject(), FaultGuard()])
    with pytest.raises(NumericalFaultError) as e:
        t.fit(_module(), _data())
    assert e.value.tensor == tensor and e.value.step == step
    msg = str(e.value)
    assert f"{tensor} became NaN/Inf at global step {step}" in msg and "learning rate" in msg and "restore" in msg
    assert t.global_step == step + 1  # stopped right after the faulty step


def test_check_interval_still_names_the_exact_step(tmp_path):
    """check_every_n_steps=4 (the accelerator setting): one host sync per 4 steps, exact step."""
    t = _trainer(tmp_path, [NaNLossAt([5]), FaultGuard(check_every_n_steps=4)])
    with pytest.raises(NumericalFaultError) as e:
        t.fit(_module(), _data())
    assert e.value.step == 5 and e.value.tensor == "loss"
    assert t.global_step == 8  # detected at the check after step 7, reported as step 5


def test_restore_rolls_back_to_last_good_state_and_goes_on(tmp_path):
    rec = Record()
    guard = FaultGuard(on_fault="restore")
    t = _trainer(tmp_path, [NaNLossAt([3]), rec, guard], max_steps=8)
    m = _module()
    t.fit(m, _data())
    assert t.global_step == 8
    assert [r["step"] for r in guard.restores] == [3] and guard.restores[0]["tensor"] == "loss"
    assert all(torch.isfinite(p).all() for p in m.parameters())
    # the state entering step 4 is the state that entered step 3 (the faulty step is undone)
    before, after = rec.at[3][0], rec.at[4][0]
    for a, b in zip(before["params"], after["params"]):
        assert torch.equal(a, b)
    for a, b in zip(before["momentum"], after["momentum"]):
        assert torch.equal(a, b)
    for a, b in zip(before["chains"], after["chains"]):
        assert torch.equal(a, b)
    assert torch.equal(before["gen"], after["gen"])


def test_restore_gives_up_after_max_restores(tmp_path):
    t = _trainer(tmp_path, [NaNLossAt(range(2, 100)), FaultGuard(on_fault="restore", max_restores=2)])
    with pytest.raises(NumericalFaultError, match="after 2 restores"):
        t.fit(_module(), _data())


def test_restore_lr_factor_lowers_the_learning_rate(tmp_path):
    t = _trainer(tmp_path, [NaNLossAt([2]), FaultGuard(on_fault="restore", restore_lr_factor=0.5)], max_steps=4)
    t.fit(_module(), _data())
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.025)


@pytest.mark.parametrize("interval", [1, 4])
def test_nan_state_is_never_checkpointed(tmp_path, interval):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, save_top_k=0,
                                               every_n_train_steps=1)
    t = _trainer(tmp_path, [NaNLossAt([5]), FaultGuard(check_every_n_steps=interval), ckpt],
                 enable_checkpointing=True)
    with pytest.raises(NumericalFaultError) as e:
        t.fit(_module(), _data())
    assert e.value.step == 5
    last = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 5  # the state after steps 0..4, before the faulty step
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert all(c is None or torch.isfinite(c).all() for c in last["qidbm"]["chains_per_rank"][0])


def test_fault_guard_rejects_bad_arguments():
    with pytest.raises(ValueError, match="on_fault"):
        FaultGuard(on_fault="ignore")
    with pytest.raises(ValueError, match="check_every_n_steps"):
        FaultGuard(check_every_n_steps=0)
    with pytest.raises(ValueError, match="restore_lr_factor"):
        FaultGuard(restore_lr_factor=float("nan"))


def test_fid_callback_never_keeps_a_nan_model_as_best(tmp_path, monkeypatch):
    """FIDCallback with a scripted FID sequence nan, 5, inf, nan: best_fid.ckpt is epoch 1's only."""
    from qidbm.lightning import FIDCallback

    scores = iter([float("nan"), 5.0, float("inf"), float("nan")])

    def compute(self, trainer, pl_module):
        self._last_images = torch.zeros(4, 1, 4, 4)
        return next(scores)

    monkeypatch.setattr(FIDCallback, "compute", compute)
    fid = FIDCallback(every_n_epochs=1, num_samples=4, dirpath=str(tmp_path))
    seen = []

    class Seen(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append((tmp_path / "best_fid.ckpt").exists())

    t = _trainer(tmp_path, [fid, Seen()], max_steps=-1, max_epochs=4)
    t.fit(_module(), _data(n=16))
    assert seen == [False, True, True, True]
    best = torch.load(tmp_path / "best_fid.ckpt", weights_only=True)
    assert best["epoch"] == 1 and fid.best_fid == 5.0
    assert [h[1] for h in fid.history][1] == 5.0 and math.isnan(fid.history[0][1])
