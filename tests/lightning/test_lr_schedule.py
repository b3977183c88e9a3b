"""The default optimizer's schedule: the factor's formula, the rates a fit runs at, resume, errors."""

import functools

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qidbm.estimators import FromData
from qidbm.lightning import BoltzmannModule
from qidbm.lightning.lr_schedule import LRSchedule, check_cooldown, lr_factor
from qidbm.models import RBM
from tests.lightning.test_module import bars_and_stripes_2x2, trainer


def test_cooldown_factor_is_constant_then_linear_to_the_last_update():
    T, N = 20, 8
    f = [lr_factor(t, cooldown_steps=N, max_steps=T) for t in range(T)]
    assert f[: T - N + 1] == [1.0] * (T - N + 1)
    assert f[T - N:] == pytest.approx([(T - t) / N for t in range(T - N, T)], abs=0)
    assert f[-1] == 1 / N
    # no cool-down: the inverse square root alone; both: the product
    assert lr_factor(30, decay=0.1) == pytest.approx(4.0 ** -0.5)
    assert lr_factor(15, decay=0.1, cooldown_steps=N, max_steps=T) == pytest.approx(2.5 ** -0.5 * 5 / 8)


@pytest.mark.parametrize("cooldown, max_steps, match", [(5, -1, "set trainer.max_steps"), (5, None, "max_steps"),
                                                         (30, 20, "longer than the run")])
def test_a_cooldown_the_trainer_cannot_run_is_an_error(cooldown, max_steps, match):
    with pytest.raises(ValueError, match=match):
        check_cooldown(cooldown, max_steps)
    check_cooldown(0, None)  # no cool-down needs no length
    with pytest.raises(ValueError, match=match):
        lr_factor(0, cooldown_steps=cooldown, max_steps=max_steps)


class _RecordLR(L.Callback):
    def __init__(self):
        self.lrs: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]


def _fit(tmp_path, max_steps, cooldown=0, ckpt_path=None, **kw):
    torch.manual_seed(0)
    pats, _ = bars_and_stripes_2x2()
    dl = DataLoader(TensorDataset(pats.repeat(10, 1).float()), batch_size=6, drop_last=True)  # 10 batches an epoch
    sgd = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.5)
    module = BoltzmannModule(RBM(4, 3), negative=FromData(), optimizer=sgd,
                             lr_schedule=LRSchedule(cooldown_steps=cooldown) if cooldown else None, **kw)
    rec = _RecordLR()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, save_top_k=0)
    trainer(tmp_path, max_steps=max_steps, enable_checkpointing=True, callbacks=[rec, ckpt]).fit(module, dl, ckpt_path=ckpt_path)
    return rec.lrs, tmp_path / "ck" / "last.ckpt"


def test_a_fit_runs_each_update_at_its_factor(tmp_path):
    lrs, _ = _fit(tmp_path, 16, cooldown=6)
    assert sorted(lrs) == list(range(16))
    for t, lr in lrs.items():
        assert lr == pytest.approx(0.1 * lr_factor(t, cooldown_steps=6, max_steps=16), rel=1e-12), t
    assert lrs[9] == pytest.approx(0.1) and lrs[15] == pytest.approx(0.1 / 6)


def test_a_cooldown_added_on_resume_counts_from_the_trainers_step(tmp_path):
    # a constant-rate run stopped at 12 updates, resumed with a cool-down over the last 6 of 18: the
    # rates of the straight run with the same schedule (the scheduler's own count would restart at 0)
    straight, _ = _fit(tmp_path / "a", 18, cooldown=6)
    _, last = _fit(tmp_path / "b", 12)
    resumed, _ = _fit(tmp_path / "b", 18, cooldown=6, ckpt_path=last)
    assert sorted(resumed) == list(range(12, 18))
    for t in range(13, 18):  # the first resumed update runs at the restored rate, the constant one, as straight[12]
        assert resumed[t] == pytest.approx(straight[t], rel=1e-12), t
    assert resumed[12] == pytest.approx(straight[12])


def test_cooldown_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="cooldown_steps must be an integer"):
        LRSchedule(cooldown_steps=-1)
    with pytest.raises(ValueError, match="cooldown_steps must be an integer"):
        LRSchedule(cooldown_steps=2.5)
    with pytest.raises(ValueError, match="decay must be >= 0"):
        LRSchedule(decay=-0.1)
    with pytest.raises(ValueError, match="set trainer.max_steps"):
        _fit(tmp_path, -1, cooldown=6)


def test_a_schedule_of_the_default_sgd_with_another_optimizer_is_an_error(tmp_path):
    # LightningCLI's optimizer: section patches configure_optimizers on the instance; the module's own
    # schedule would then be dropped without a word
    pats, _ = bars_and_stripes_2x2()
    module = BoltzmannModule(RBM(4, 3), negative=FromData(), lr_schedule=LRSchedule(cooldown_steps=2))
    module.configure_optimizers = lambda: torch.optim.Adam(module.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="lr_scheduler: section"):
        trainer(tmp_path, max_steps=4).fit(module, DataLoader(TensorDataset(pats.float()), batch_size=3))
