"""Lightning's EMAWeightAveraging on a BoltzmannModule: the checkpoint holds the exponential moving average of
the parameters after every update (what `qidbm sample` and `qidbm evaluate` then use), from a config too."""

import functools

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch.utils.data import DataLoader, TensorDataset

from qidbm.cli import main
from qidbm.estimators import FromNoise, MeanField
from qidbm.lightning import BoltzmannModule
from qidbm.lightning.centering import Centering
from qidbm.models import DBM
from tests.lightning.test_module import bars_and_stripes_2x2, trainer
from tests.test_cli import tiny_run  # noqa: F401  (fixture)


class _Trajectory(L.Callback):
    """The model's parameters after every update (before the averaging callback that follows it)."""

    def __init__(self):
        self.params = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.params.append({k: v.detach().double().clone() for k, v in pl_module.model.state_dict().items()})


def test_the_checkpoint_holds_the_moving_average_of_every_update(tmp_path):
    torch.manual_seed(0)
    pats, _ = bars_and_stripes_2x2()
    dl = DataLoader(TensorDataset(pats.repeat(10, 1).float()), batch_size=6, drop_last=True)
    module = BoltzmannModule(DBM([4, 6, 3]), negative=FromNoise(sweeps=2), positive=MeanField(), centering=Centering(),
                             optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.5))
    traj, decay = _Trajectory(), 0.8
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, save_top_k=-1,
                                               every_n_train_steps=4, filename="{step}")
    trainer(tmp_path, max_steps=12, enable_checkpointing=True,
            callbacks=[traj, EMAWeightAveraging(decay=decay), ckpt]).fit(module, dl)
    emas = [dict(traj.params[0])]  # AveragedModel takes the first update's parameters as they are
    for p in traj.params[1:]:
        emas.append({k: decay * emas[-1][k] + (1 - decay) * p[k] for k in p})
    # the average in state_dict, the parameters being trained beside it
    for name, t in (("step=8.ckpt", 8), ("last.ckpt", 12)):
        saved = torch.load(tmp_path / "ck" / name, weights_only=False)
        for k, v in emas[t - 1].items():
            torch.testing.assert_close(saved["state_dict"][f"model.{k}"].double(), v, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(saved["current_model_state"][f"model.{k}"].double(), traj.params[t - 1][k])
    assert not torch.allclose(emas[7]["weights.0"], traj.params[7]["weights.0"])

def test_weight_averaging_from_the_command_line(tiny_run, tmp_path):  # noqa: F811
    # LightningCLI hands the module a callable optimizer that holds its parser; the module keeps a plain
    # one, so the averaging callback's deep copy of the module works
    cfg, out = tiny_run
    assert main(["fit", "--config", str(cfg), "--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging",
                 "--trainer.callbacks.decay", "0.5"]) == 0
    saved = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert "current_model_state" in saved and "model.weights.0" in saved["state_dict"]
    assert main(["sample", "--ckpt_path", str(out / "checkpoints" / "last.ckpt"), "--num-samples", "4",
                 "--num-steps", "2", "--out", str(tmp_path / "s")]) == 0
