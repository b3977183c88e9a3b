"""NextStage: a two-stage recipe in one fit is exactly the two-command form (train, then resume with the
second stage's settings), and a resume in either stage continues it exactly."""

import functools

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qidbm.estimators import FromNoise, MeanField, Mixture, Persistent, to_config
from qidbm.lightning import BoltzmannModule, NextStage
from qidbm.lightning.centering import Centering
from qidbm.lightning.lr_schedule import LRSchedule, lr_factor
from qidbm.models import DBM
from tests.lightning.test_module import bars_and_stripes_2x2, trainer

AT, END = 10, 16  # 10 batches an epoch: the stage starts with an epoch, as the shipped recipe's does


def _second_negative():
    return Mixture(FromNoise(sweeps=2, density=[0.2, 0.8]), Persistent(num_chains=4, sweeps=2))


def _stage_two():
    return NextStage(at_step=AT, negative=_second_negative(), lr=0.05, lr_schedule=LRSchedule(cooldown_steps=3),
                     sample_steps=7)


class _Record(L.Callback):
    """The rate and negative estimator of every update (read when the update starts, after NextStage)."""

    def __init__(self):
        self.lrs, self.negatives = {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]
        self.negatives[trainer.global_step] = type(pl_module.negative).__name__


def _fit(root, max_steps, *, staged, second=False, ckpt_path=None):
    """A 4-6-3 DBM on bars and stripes: the first stage's settings (noise chains, lr 0.1, cool-down over 4
    updates to the stage's end), with the second stage by NextStage (``staged``) or as the module's own
    settings (``second``: the resume command of the two-command form)."""
    torch.manual_seed(0)
    pats, _ = bars_and_stripes_2x2()
    dl = DataLoader(TensorDataset(pats.repeat(10, 1).float()), batch_size=6, drop_last=True)
    if second:
        kw = dict(negative=_second_negative(), lr=0.05, lr_schedule=LRSchedule(cooldown_steps=3), sample_steps=7)
    else:
        kw = dict(negative=FromNoise(sweeps=2), lr=0.1,
                  lr_schedule=LRSchedule(cooldown_steps=4, end_step=AT if staged else None))
    sgd = functools.partial(torch.optim.SGD, lr=kw.pop("lr"), momentum=0.5)
    module = BoltzmannModule(DBM([4, 6, 3]), positive=MeanField(), centering=Centering(), optimizer=sgd, **kw)
    rec = _Record()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=root / "ck", save_last=True, save_top_k=-1,
                                               every_n_train_steps=1, filename="{step}")
    callbacks = [_stage_two(), rec, ckpt] if staged else [rec, ckpt]
    trainer(root, max_steps=max_steps, enable_checkpointing=True, callbacks=callbacks).fit(module, dl, ckpt_path=ckpt_path)
    return module, rec


def _params(module):
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


@pytest.fixture(scope="module")
def one_command(tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    module, rec = _fit(root, END, staged=True)
    return root, module, rec


def test_one_fit_switches_estimator_rate_and_schedule_at_the_step(one_command):
    _, module, rec = one_command
    assert sorted(rec.lrs) == list(range(END))
    for t in range(END):
        want = 0.1 * lr_factor(t, cooldown_steps=4, end_step=AT) if t < AT else \
            0.05 * lr_factor(t, cooldown_steps=3, max_steps=END)
        assert rec.lrs[t] == pytest.approx(want, rel=1e-12, abs=0), t
        assert rec.negatives[t] == ("FromNoise" if t < AT else "Mixture"), t
    assert rec.lrs[AT - 1] == pytest.approx(0.1 / 4) and rec.lrs[AT] == pytest.approx(0.05)
    # the module's hyperparameters, and so every later checkpoint, name the second stage
    assert module.hparams["negative"] == to_config(_second_negative())
    assert module.hparams["sample_steps"] == 7
    assert module.hparams["lr_schedule"] == to_config(LRSchedule(cooldown_steps=3))
    assert module.sampling().num_steps == 7


def test_one_command_is_the_two_command_recipe_exactly(one_command, tmp_path):
    root, module, _ = one_command
    _fit(tmp_path, AT, staged=False)
    resumed, rec = _fit(tmp_path, END, staged=False, second=True, ckpt_path=tmp_path / "ck" / "last.ckpt")
    assert sorted(rec.lrs) == list(range(AT, END))
    one, two = _params(module), _params(resumed)
    for k in one:
        assert torch.equal(one[k], two[k]), k


@pytest.mark.parametrize("step", [AT - 3, AT, AT + 3])
def test_a_resume_in_either_stage_continues_the_run_exactly(one_command, tmp_path, step):
    # after the switch the checkpoint holds the second estimator's persistent chains, which the
    # resumed run (built with the first stage's estimator) hands to NextStage
    root, module, _ = one_command
    resumed, rec = _fit(tmp_path, END, staged=True, ckpt_path=root / "ck" / f"step={step}.ckpt")
    assert min(rec.lrs) == step
    one, two = _params(module), _params(resumed)
    for k in one:
        assert torch.equal(one[k], two[k]), k
    assert resumed.hparams["negative"] == to_config(_second_negative())


def test_stage_settings_the_run_cannot_follow_are_errors(tmp_path):
    with pytest.raises(ValueError, match="at_step must be an update count"):
        NextStage(at_step=0)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        NextStage(at_step=5, lr=-1.0)
    with pytest.raises(ValueError, match="set trainer.max_steps above 10"):
        _fit(tmp_path, AT, staged=True)
    module = BoltzmannModule(DBM([4, 6, 3]), lr_schedule=LRSchedule(cooldown_steps=2, end_step=8))
    pats, _ = bars_and_stripes_2x2()
    with pytest.raises(ValueError, match="set end_step to 10"):
        trainer(tmp_path, max_steps=END, callbacks=[NextStage(at_step=AT)]).fit(module, DataLoader(pats.float(), batch_size=6))
    module = BoltzmannModule(DBM([4, 6, 3]), lr_schedule=LRSchedule(cooldown_steps=2))  # would cool down to max_steps
    with pytest.raises(ValueError, match="end_step unset: trainer.max_steps.*set end_step to 10"):
        trainer(tmp_path, max_steps=END, callbacks=[NextStage(at_step=AT)]).fit(module, DataLoader(pats.float(), batch_size=6))
    with pytest.raises(ValueError, match="end_step"):
        LRSchedule(cooldown_steps=2, end_step=0)
    with pytest.raises(ValueError, match="after the run"):
        lr_factor(0, cooldown_steps=2, max_steps=8, end_step=9)


def test_grids_follow_the_sweeps_of_the_stage(tmp_path, monkeypatch):
    # SampleGrid(num_steps=None) draws as `qidbm sample` would at that point: 2 sweeps (the first stage's
    # noise chains), then the second stage's sample_steps
    import qidbm.samplers.drawing as drawing
    from qidbm.lightning import SampleGrid

    seen, real = [], drawing.draw

    def spy(model, num, spec, **kw):
        seen.append(spec.num_steps)
        return real(model, num, spec, **kw)

    monkeypatch.setattr(drawing, "draw", spy)
    torch.manual_seed(0)
    pats, _ = bars_and_stripes_2x2()
    dl = DataLoader(TensorDataset(pats.repeat(10, 1).float()), batch_size=6, drop_last=True)
    module = BoltzmannModule(DBM([4, 6, 3]), negative=FromNoise(sweeps=2), positive=MeanField(),
                             lr_schedule=LRSchedule(cooldown_steps=4, end_step=AT))
    grid = SampleGrid(num_samples=4, num_steps=None, dirpath=str(tmp_path / "grids"))
    trainer(tmp_path, max_steps=2 * AT, callbacks=[_stage_two(), grid]).fit(module, dl)
    assert seen == [2, 7]
    assert (tmp_path / "grids" / "epoch=001.png").is_file()
