"""A resume never silently becomes another run.

Faults injected, each through `qidbm fit --ckpt_path` (or `qidbm sample --ckpt`):
* a checkpoint of another LightningModule (an NQS ``VMCModule`` checkpoint for a QiDBM config);
* an MNIST checkpoint resumed with a Fashion-MNIST data module;
* other layer sizes;
* a changed learning rate (the module's own SGD, and a LightningCLI ``optimizer:`` section).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qidbm.cli import main
from qidbm.data.testing import make_idx_dataset
from tests.test_cli import TINY, make_tiny_mnist

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny QiDBM fit on MNIST (1 epoch, 3 steps) with its checkpoint."""
    tmp = tmp_path_factory.mktemp("resume_checks")
    root = make_tiny_mnist(tmp / "data")
    make_idx_dataset(root, "FashionMNIST", n_train=240, n_test=60)
    out = tmp / "run"
    cfg = tmp / "tiny.yaml"
    cfg.write_text(TINY.format(out=out, root=root).replace("max_epochs: 2", "max_epochs: 1"))
    assert main(["fit", "--config", str(cfg)]) == 0
    return {"root": root, "cfg": cfg, "out": out, "ckpt": out / "checkpoints" / "last.ckpt", "tmp": tmp}


def _config_into(run, out: Path) -> Path:
    """The fixture's config, writing into ``out`` instead."""
    cfg = out.parent / (out.name + ".yaml")
    cfg.write_text(TINY.format(out=out, root=run["root"]).replace("max_epochs: 2", "max_epochs: 1"))
    return cfg


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _tiny_nqs_config(tmp_path: Path) -> Path:
    """The shipped NQS config, cut to 1 step with a few chains and samples (any sampling size it has)."""
    import yaml

    cfg = yaml.safe_load((REPO / "configs" / "nqs_ho2d_noninteracting.yaml").read_text())
    small = {"n_chains": 4, "samples_per_chain": 2, "burn_in": 2, "eval_chains": 2, "eval_samples": 4,
             "eval_burn_in": 2, "n_samples": 4}

    def shrink(x):
        if isinstance(x, dict):
            return {k: small[k] if k in small and isinstance(v, int) else shrink(v) for k, v in x.items()}
        return [shrink(v) for v in x] if isinstance(x, list) else x

    cfg = shrink(cfg)
    cfg["trainer"].update(max_steps=1, enable_progress_bar=False, default_root_dir=str(tmp_path / "nqs"),
                          logger={"class_path": "lightning.pytorch.loggers.CSVLogger",
                                  "init_args": {"save_dir": str(tmp_path / "nqs"), "name": "logs"}})
    out = tmp_path / "nqs.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


def test_checkpoint_of_another_module_is_refused(run, tmp_path):
    # a real NQS checkpoint, written by `qidbm fit` with the shipped NQS config (1 step, tiny sampler)
    assert main(["fit", "--config", str(_tiny_nqs_config(tmp_path))]) == 0
    nqs = next((tmp_path / "nqs").rglob("*.ckpt"))
    before = _files(run["out"])
    with pytest.raises(ValueError, match=r"was written by a qidbm\.nqs\.VMCModule run, but this config trains a "
                                         r"qidbm\.lightning\.BoltzmannModule.*own config"):
        main(["fit", "--config", str(run["cfg"]), "--ckpt_path", str(nqs)])
    assert _files(run["out"]) == before  # nothing was trained or written into the QiDBM's run folder
    # `qidbm sample` says which module wrote it (it was written by `qidbm fit`)
    with pytest.raises(ValueError, match=r"written by `qidbm fit` for a qidbm\.nqs\.VMCModule, not for a Boltzmann "
                                         r"machine.*load_from_checkpoint"):
        main(["sample", "--ckpt", str(nqs), "--num-samples", "2", "--out", str(tmp_path / "s")])


def test_mnist_checkpoint_with_a_fashion_mnist_data_module_is_refused(run):
    with pytest.raises(ValueError, match=r"trained on other data \(dataset: MNIST in the checkpoint, FashionMNIST in "
                                         r"this run\).*MNISTDataModule"):
        main(["fit", "--config", str(run["cfg"]), "--data", "qidbm.data.FashionMNISTDataModule",
              "--data.init_args.root", str(run["root"]), "--data.init_args.download", "false",
              "--data.init_args.batch_size", "40", "--trainer.max_epochs", "2", "--ckpt_path", str(run["ckpt"])])


def test_other_layer_sizes_name_the_sizes(run):
    with pytest.raises(ValueError, match=r"does not match this run's model \(layer_sizes: \[784, 16, 8\] in the "
                                         r"checkpoint, \[784, 32, 8\] in this run\)"):
        main(["fit", "--config", str(run["cfg"]), "--model.init_args.model.init_args.layer_sizes", "[784, 32, 8]",
              "--trainer.max_epochs", "2", "--ckpt_path", str(run["ckpt"])])


def _last_lr(path: Path) -> float:
    return torch.load(path, weights_only=True)["optimizer_states"][0]["param_groups"][0]["lr"]


def test_changed_learning_rate_is_applied_and_reported(run, tmp_path):
    ckpt = tmp_path / "start.ckpt"
    ckpt.write_bytes(run["ckpt"].read_bytes())
    assert _last_lr(ckpt) == 0.01
    out = tmp_path / "resumed"
    with pytest.warns(UserWarning, match=r"resuming from global step 3 with settings that differ from the "
                                         r"checkpoint's: lr 0\.01 -> 0\.001 \(applied\)"):
        assert main(["fit", "--config", str(_config_into(run, out)),
                     "--model.init_args.optimizer.init_args.lr", "0.001",
                     "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt)]) == 0
    assert _last_lr(out / "checkpoints" / "last.ckpt") == 0.001  # it trained at the new rate


def test_changed_learning_rate_of_a_cli_optimizer_section_is_applied(run, tmp_path):
    out = tmp_path / "adam"
    common = ["--config", str(_config_into(run, out)), "--optimizer", "torch.optim.Adam"]
    assert main(["fit", *common, "--optimizer.lr", "0.01"]) == 0
    with pytest.warns(UserWarning, match=r"lr 0\.01 -> 0\.002 \(applied\)"):
        assert main(["fit", *common, "--optimizer.lr", "0.002", "--trainer.max_epochs", "2",
                     "--ckpt_path", "last"]) == 0
    assert _last_lr(out / "checkpoints" / "last.ckpt") == 0.002


def test_changed_learning_rate_keeps_a_schedulers_factor():
    """The checkpoint's StepLR had halved the rate (0.01 -> 0.005); the resume asks for 0.001: the
    optimizer continues at 0.0005 and the scheduler's base rate becomes 0.001."""
    from types import SimpleNamespace

    from qidbm.lightning.resume_checks import apply_changed_settings_on_resume, optimizer_settings

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    saved = optimizer_settings([opt])  # as configured by the checkpoint's run
    opt.step()
    sched.step()  # the restored state: lr 0.005
    configured = [[dict(saved[0][0], lr=0.001)]]
    trainer = SimpleNamespace(optimizers=[opt], lr_scheduler_configs=[SimpleNamespace(scheduler=sched)])
    with pytest.warns(UserWarning, match=r"lr 0\.01 -> 0\.001 \(applied \(the restored rate 0\.005 is scaled alike"):
        apply_changed_settings_on_resume(trainer, {"optimizer_settings": saved, "global_step": 1}, {}, configured)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0005) and sched.base_lrs == [0.001]
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.00025)  # the schedule goes on from there


def test_a_setting_newer_than_the_checkpoint_is_reported_when_set():
    """A checkpoint written before an option existed has no value for it: the resume lists the option
    when this run sets it away from its default, and stays quiet when it does not."""
    from types import SimpleNamespace

    from qidbm.lightning.resume_checks import apply_changed_settings_on_resume

    from qidbm.estimators import FromNoise, Persistent, to_config
    from qidbm.lightning.lr_schedule import LRSchedule

    trainer = SimpleNamespace(optimizers=[], lr_scheduler_configs=[])
    noise = to_config(FromNoise(20))
    resume = {"hyper_parameters": {"negative": noise}, "global_step": 34383}
    defaults = {"negative": to_config(Persistent()), "lr_schedule": None, "sample_output": None}
    cooldown = to_config(LRSchedule(cooldown_steps=12000))
    with pytest.warns(UserWarning, match=r"lr_schedule \(not in the checkpoint, which predates it; default None\) -> "
                                         r".*LRSchedule.*'cooldown_steps': 12000"):
        lines = apply_changed_settings_on_resume(
            trainer, resume, {"negative": noise, "lr_schedule": cooldown, "sample_output": None}, None, defaults)
    assert len(lines) == 1  # sample_output at its default is not a change
    unchanged = {"negative": noise, "lr_schedule": None}
    assert apply_changed_settings_on_resume(trainer, resume, unchanged, None, defaults) == []
