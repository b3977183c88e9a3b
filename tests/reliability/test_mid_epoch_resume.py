"""MidEpochResume in-process: the resumed epoch sees the batches the uninterrupted run saw.

Fault injected: the fit stops (an exception) when global step 9 starts, mid-epoch 1, after a
checkpoint at step 8; a new Trainer resumes from it. Parameters equal the uninterrupted run's bit
for bit at the end, with the loader in the main process and with a worker process (whose first
indices are drawn before Lightning calls set_epoch). Without MidEpochResume they do not.
"""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch

from qidbm.data import MNISTDataModule
from qidbm.lightning import BoltzmannModule
from qidbm.lightning.mid_epoch_resume import MidEpochResume
from qidbm.models import QiDBM


class _Stop(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 9:
            raise RuntimeError("stop at step 9")


def _fit(root, out, *, workers, resume, stop=False, ckpt=None):
    L.seed_everything(0, verbose=False)
    dm = MNISTDataModule(root=str(root), encoding="binary", batch_size=40, download=False, num_workers=workers,
                         cache_dir=str(root / "cache"))
    m = BoltzmannModule(QiDBM([784, 16, 8], [1]), optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.5))
    cbs = [L.pytorch.callbacks.ModelCheckpoint(dirpath=str(out), save_last=True, save_top_k=0, every_n_train_steps=2)]
    cbs += [MidEpochResume()] if resume else []
    cbs += [_Stop()] if stop else []
    t = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
                  enable_model_summary=False, callbacks=cbs, default_root_dir=str(out))
    try:
        t.fit(m, datamodule=dm, ckpt_path=ckpt)
    except RuntimeError as e:
        assert stop and "stop at step 9" in str(e)
    return m


@pytest.mark.slow  # ~4 in-process fits per case
@pytest.mark.parametrize("workers", [0, 1])
def test_mid_epoch_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_root, workers):
    straight = _fit(tiny_root, tmp_path / "a", workers=workers, resume=True)
    results = {}
    for resume in (True, False):
        out = tmp_path / f"b{resume}"
        _fit(tiny_root, out, workers=workers, resume=resume, stop=True)
        assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 8
        resumed = _fit(tiny_root, out, workers=workers, resume=resume, ckpt=str(out / "last.ckpt"))
        results[resume] = all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))
    assert results == {True: True, False: False}
