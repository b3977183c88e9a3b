"""BoltzmannModule(transverse_field=...): fixed, annealed and floored fields in a real fit; the learned field for contrast."""

import functools

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qidbm.estimators import FromData
from qidbm.lightning import BoltzmannModule, TransverseField
from qidbm.models import QRBM, RBM, QiDBM
from tests.lightning.test_module import bars_and_stripes_2x2, trainer


class _RecordGamma(L.Callback):
    """The field each update's loss was computed at (read just before the optimizer step)."""

    def __init__(self):
        self.before: dict[int, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before[trainer.global_step] = pl_module.model.transverse_parameter(1).detach().clone()


def _fit(tmp_path, control, model=None, steps=12):
    torch.manual_seed(0)
    pats, _ = bars_and_stripes_2x2()
    dl = DataLoader(TensorDataset(pats.repeat(10, 1).float()), batch_size=6, drop_last=True)
    model = model or QRBM(4, 3, transverse_field_init=0.3)
    module = BoltzmannModule(model, negative=FromData(), optimizer=functools.partial(torch.optim.SGD, lr=0.5),
                             transverse_field=control)
    rec = _RecordGamma()
    trainer(tmp_path, max_steps=steps, callbacks=[rec]).fit(module, dl)
    return model, rec.before


def test_learned_fields_move(tmp_path):
    model, before = _fit(tmp_path, None)
    assert not torch.equal(model.transverse_parameter(1).detach(), torch.full((3,), 0.3))


def test_fixed_fields_stay_at_their_value(tmp_path):
    model, before = _fit(tmp_path, TransverseField(fixed=0.7))
    assert all(torch.equal(g, torch.full((3,), 0.7)) for g in before.values())
    assert torch.equal(model.transverse_parameter(1).detach(), torch.full((3,), 0.7))
    assert not model.transverse_parameter(1).requires_grad


def test_annealed_fields_follow_the_linear_schedule(tmp_path):
    _, before = _fit(tmp_path, TransverseField(anneal_from=1.0, anneal_to=0.2, anneal_steps=8))
    for t, g in before.items():
        assert torch.allclose(g, torch.full((3,), 1.0 + (0.2 - 1.0) * min(1.0, t / 8)), atol=1e-7), t
    # the run's own length when anneal_steps is not given
    _, before = _fit(tmp_path, TransverseField(anneal_from=1.0), steps=10)
    assert float(before[5][0]) == pytest.approx(0.5)


def test_floor_keeps_every_field_above_it_and_keeps_learning(tmp_path):
    model, before = _fit(tmp_path, TransverseField(floor=0.25), model=QRBM(4, 3, transverse_field_init=0.0))
    g = model.transverse_parameter(1).detach()
    assert (g.abs() >= 0.25).all()
    assert all((b.abs() >= 0.25).all() for t, b in before.items() if t > 0)
    assert model.transverse_parameter(1).requires_grad


def test_a_deep_machine_fixes_every_quantum_layer(tmp_path):
    model = QiDBM([4, 3, 2, 2], quantum_layers=[1, 3], transverse_field_init=0.1)
    _fit(tmp_path, TransverseField(fixed=0.4), model=model, steps=3)
    assert all(torch.equal(model.transverse_parameter(l).detach(), torch.full((n,), 0.4)) for l, n in ((1, 3), (3, 2)))


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="one of fixed"):
        TransverseField()
    with pytest.raises(ValueError, match="one of fixed"):
        TransverseField(fixed=1.0, floor=0.1)
    with pytest.raises(ValueError, match="finite field >= 0"):
        TransverseField(fixed=-1.0)
    with pytest.raises(ValueError, match="anneal_steps"):
        TransverseField(anneal_from=1.0, anneal_steps=0)
    # refused when the module is built, before any training
    with pytest.raises(ValueError, match="has none"):
        BoltzmannModule(RBM(4, 3), transverse_field=TransverseField(fixed=1.0))
    with pytest.raises(ValueError, match="coupled_field"):
        BoltzmannModule(QRBM(4, 3, coupled_field=True), transverse_field=TransverseField(fixed=1.0))


def test_the_setting_is_stored_with_the_hyperparameters_and_rebuilt():
    m = BoltzmannModule(QRBM(4, 3), transverse_field=TransverseField(anneal_from=2.0, anneal_to=0.5, anneal_steps=7))
    cfg = m.hparams["transverse_field"]
    assert cfg["class_path"] == "qidbm.lightning.transverse_field.TransverseField"
    assert cfg["init_args"]["anneal_from"] == 2.0 and cfg["init_args"]["anneal_steps"] == 7
    again = BoltzmannModule(QRBM(4, 3), **{k: v for k, v in m.hparams.items() if k == "transverse_field"})
    assert again.transverse_field.value_at(7) == pytest.approx(0.5)
