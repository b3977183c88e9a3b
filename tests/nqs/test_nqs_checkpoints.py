"""VMCModule checkpoints: resume, load_from_checkpoint (CLI and Python runs), the earlier format refused."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from qidbm.cli import main
from qidbm.nqs import HarmonicTrap, MetropolisHastingsSampler, MetropolisSampler, RBMWaveFunction, VMCModule

REPO = Path(__file__).resolve().parents[2]



def _objects(seed):
    torch.manual_seed(seed)
    wf = RBMWaveFunction(2, 2, 3, init_std=0.1, jastrow=True)
    return wf, HarmonicTrap(2, 2, interaction=True), MetropolisSampler()


def _module(seed, **kw):
    return VMCModule(*_objects(seed), n_chains=8, samples_per_chain=4, burn_in=5, sr=True, optimizer="sgd", lr=0.05,
                     **kw)


def _trainer(tmp_path, steps, **kw):
    return pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path, **kw)


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def checkpoint(tmp_path):
    """A 3-step fit of a Python-built module and its last.ckpt."""
    m = _module(0)
    ck = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _trainer(tmp_path, 3, callbacks=[ck]).fit(m)
    return m, tmp_path / "ckpt" / "last.ckpt"


def test_resume_restores_chains_parameters_and_continues(checkpoint, tmp_path):
    m, path = checkpoint
    assert torch.load(path, weights_only=True)["nqs_checkpoint_format"] == 2  # plain data: safe to read
    m2 = _module(1)  # other initial parameters and chains
    assert not _same_state(m, m2)
    _trainer(tmp_path, 3).fit(m2, ckpt_path=path)  # nothing left to train: the restored state as it was
    assert _same_state(m, m2) and bool(m2.thermalized)
    m3 = _module(1)
    t = _trainer(tmp_path, 5)
    t.fit(m3, ckpt_path=path)
    assert t.global_step == 5 and [h["step"] for h in m3.history] == [3, 4]
    assert not torch.equal(m3.chains, m.chains)


def test_python_built_checkpoint_loads_with_its_objects(checkpoint):
    m, path = checkpoint
    hp = torch.load(path, weights_only=True)["hyper_parameters"]
    assert not {"wavefunction", "hamiltonian", "sampler"} & set(hp) and hp["n_chains"] == 8
    m2 = VMCModule.load_from_checkpoint(path, wavefunction=_objects(1)[0], hamiltonian=HarmonicTrap(2, 2, True),
                                        sampler=MetropolisSampler())
    assert _same_state(m, m2)


def test_cli_checkpoint_records_the_objects_config(tmp_path):
    cfg = REPO / "configs" / "nqs_qdot2d_rbm_jastrow.yaml"
    assert main(["fit", "--config", str(cfg), "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false",
                 "--trainer.logger.init_args.save_dir", str(tmp_path), "--model.n_chains", "8",
                 "--model.samples_per_chain", "4", "--model.burn_in", "2",
                 "--model.sampler", "qidbm.nqs.MetropolisHastingsSampler", "--model.sampler.time_step", "0.3",
                 "--trainer.callbacks.n_samples", "0"]) == 0
    path = next(tmp_path.rglob("*.ckpt"))
    hp = torch.load(path, weights_only=True)["hyper_parameters"]
    assert hp["wavefunction"]["class_path"] == "qidbm.nqs.RBMWaveFunction"
    assert hp["sampler"] == {"class_path": "qidbm.nqs.MetropolisHastingsSampler",
                             "init_args": {"time_step": 0.3, "generator": None}}
    m = VMCModule.load_from_checkpoint(path)  # rebuilt from the recorded config alone
    assert isinstance(m.sampler, MetropolisHastingsSampler) and m.sampler.time_step == 0.3
    assert m.wavefunction.jastrow is not None and m.hamiltonian.interaction and m.chains.shape == (8, 4)
    sd = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())


def test_checkpoint_of_the_earlier_vmc_module_is_refused_clearly(checkpoint, tmp_path):
    _, path = checkpoint
    ck = torch.load(path, weights_only=True)
    del ck["nqs_checkpoint_format"]
    ck["state_dict"] = {k.replace("wavefunction.", "wf.", 1): v for k, v in ck["state_dict"].items()}
    old = tmp_path / "old.ckpt"
    torch.save(ck, old)
    with pytest.raises(ValueError, match="earlier VMCModule that took loose arguments.*Start a new run"):
        _trainer(tmp_path, 5).fit(_module(1), ckpt_path=old)
